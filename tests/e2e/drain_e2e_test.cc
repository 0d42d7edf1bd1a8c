// SIGTERM on the real process: health flips to NOT_SERVING, new calls are
// refused with UNAVAILABLE, every call in flight completes, the process
// exits 0; a second SIGTERM exits at once.
#include <signal.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "attnserve/client/tensor_helpers.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"

namespace attnserve::e2e {
namespace {

// A 1-head BNSD fp32 request of length `s`, head dim `d`.
v1::FlashAttentionScoreRequest Request(int64_t s, int64_t d) {
  const std::vector<int64_t> shape = {1, 1, s, d};
  v1::FlashAttentionScoreRequest r;
  const std::vector<float> values = RandomFloats(static_cast<size_t>(s * d), 5);
  *r.mutable_query() = MakeTensor(values, shape, v1::DATA_TYPE_FLOAT32).value();
  *r.mutable_key() = MakeTensor(values, shape, v1::DATA_TYPE_FLOAT32).value();
  *r.mutable_value() = MakeTensor(values, shape, v1::DATA_TYPE_FLOAT32).value();
  r.set_head_num(1);
  r.set_input_layout("BNSD");
  return r;
}

struct CallRecord {
  absl::Time start, end;
  absl::StatusCode code;
  std::string message;
};

// The server's request log lines (one per call that reached a handler) for
// FlashAttentionScore that ended with `status`.
std::vector<std::string> RequestLines(const std::string& log,
                                      absl::string_view status) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "FlashAttentionScore request_id=") &&
        absl::StrContains(line, absl::StrCat(" status=", status, " "))) {
      lines.emplace_back(line);
    }
  }
  return lines;
}

constexpr char kDrainRefusal[] = "server is draining for shutdown";

TEST(DrainE2eTest, SigtermDuringLoadLosesNoCallInFlight) {
  absl::StatusOr<int> metrics_port = PickFreePort();
  ASSERT_TRUE(metrics_port.ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=2", "--threads_per_request=1", "--drain_timeout=60s",
       absl::StrCat("--metrics_listen=127.0.0.1:", *metrics_port)});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<Client> client = Client::Connect((*server)->target());
  ASSERT_TRUE(client.ok());
  // Calls of a few hundred milliseconds each, so that several are in flight
  // (running or queued) when the signal arrives.
  const v1::FlashAttentionScoreRequest request = Request(3072, 64);

  absl::Mutex mu;
  std::vector<CallRecord> calls;
  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  // Joins the callers on every path out of the test, also a failed ASSERT;
  // stopping the server ends their calls at once.
  const absl::Cleanup join_callers = [&] {
    stop = true;
    (*server)->Stop();
    for (std::thread& t : callers) t.join();
  };
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        CallRecord record;
        record.start = absl::Now();
        absl::StatusOr<v1::FlashAttentionScoreResponse> response =
            client->FlashAttentionScore(request, absl::Seconds(60));
        record.end = absl::Now();
        record.code = response.status().code();
        record.message = std::string(response.status().message());
        if (response.ok() &&
            response->attention_out().data().size() != 3072u * 64 * 4) {
          record.code = absl::StatusCode::kDataLoss;
        }
        absl::MutexLock lock(&mu);
        calls.push_back(record);
        if (record.code == absl::StatusCode::kUnavailable) return;
      }
    });
  }
  // Signal once a call runs and more wait behind it (the server says so),
  // not after a guessed time: on a loaded machine the first 2.3 MB requests
  // can take a while to arrive. (Each call is a large job, so one runs at a
  // time; the callers keep the queue filled.)
  ASSERT_GE(AwaitMetricAtLeast(*metrics_port, "attnserve_running_jobs", 1,
                               absl::Seconds(60)),
            1)
      << (*server)->log();
  const double queued = AwaitMetricAtLeast(
      *metrics_port, "attnserve_queue_depth", 2, absl::Seconds(60));
  ASSERT_GE(queued, 2) << (*server)->log();
  const absl::Time signalled = absl::Now();
  (*server)->Signal(SIGTERM);

  // Health turns NOT_SERVING while the calls drain.
  bool saw_not_serving = false;
  std::optional<int> exit_code;
  while (!(exit_code = (*server)->WaitForExit(absl::Milliseconds(10)))) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    const Client probe(grpc::CreateCustomChannel(
        (*server)->target(), grpc::InsecureChannelCredentials(), args));
    absl::StatusOr<ServingStatus> health = probe.Health("", absl::Seconds(1));
    if (health.ok() && *health == ServingStatus::kNotServing) {
      saw_not_serving = true;
    }
    if (absl::Now() - signalled > absl::Seconds(60)) break;
  }
  stop = true;
  for (std::thread& t : callers) t.join();
  callers.clear();
  ASSERT_TRUE(exit_code.has_value()) << "still running 60 s after SIGTERM";
  EXPECT_EQ(*exit_code, 0) << (*server)->log();
  EXPECT_TRUE(saw_not_serving);

  int in_flight_at_signal = 0;
  int ok = 0;
  int refused = 0;
  for (const CallRecord& call : calls) {
    // Started well before the signal: admitted, so it must have completed.
    // (The margin covers the time from a call's start to its admission:
    // sending and receiving 2.3 MB takes milliseconds on an idle machine but
    // can take hundreds on a loaded one.)
    if (call.start < signalled - absl::Milliseconds(500)) {
      EXPECT_EQ(call.code, absl::StatusCode::kOk) << call.message;
    } else {
      EXPECT_THAT(call.code, ::testing::AnyOf(absl::StatusCode::kOk,
                                              absl::StatusCode::kUnavailable))
          << call.message;
    }
    if (call.start < signalled && call.end > signalled &&
        call.code == absl::StatusCode::kOk) {
      ++in_flight_at_signal;
    }
    if (call.code == absl::StatusCode::kOk) ++ok;
    if (call.code == absl::StatusCode::kUnavailable &&
        absl::StrContains(call.message, kDrainRefusal)) {
      ++refused;
    }
  }
  // The calls queued when the signal was sent (each needs a whole job's
  // time to start and finish) completed.
  EXPECT_GE(in_flight_at_signal, queued);
  EXPECT_GE(refused, 1);

  // The server's side, independent of the callers' clocks: every call that
  // reached it was answered OK, or refused at the door by the drain (never
  // dropped from the queue or cut while running), and each of those answers
  // reached its caller.
  const std::string log = (*server)->log();
  EXPECT_THAT(log, ::testing::HasSubstr("draining"));
  const std::vector<std::string> answered = RequestLines(log, "OK");
  const std::vector<std::string> refusals = RequestLines(log, "UNAVAILABLE");
  EXPECT_EQ(static_cast<int>(answered.size()), ok);
  EXPECT_EQ(static_cast<int>(refusals.size()), refused);
  for (const std::string& line : refusals) {
    EXPECT_THAT(line, ::testing::HasSubstr(kDrainRefusal));
  }
  int request_lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "FlashAttentionScore request_id=")) {
      ++request_lines;
    }
  }
  EXPECT_EQ(request_lines, static_cast<int>(answered.size() + refusals.size()));
  if (HasFailure()) {
    std::string trace = "calls (start and end relative to the signal):\n";
    for (const CallRecord& call : calls) {
      absl::StrAppend(&trace, absl::FormatDuration(call.start - signalled),
                      " .. ", absl::FormatDuration(call.end - signalled), " ",
                      absl::StatusCodeToString(call.code), " ", call.message,
                      "\n");
    }
    ADD_FAILURE() << trace << "server log:\n" << log;
  }
}

TEST(DrainE2eTest, SecondSigtermExitsAtOnce) {
  absl::StatusOr<int> metrics_port = PickFreePort();
  ASSERT_TRUE(metrics_port.ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=1", "--threads_per_request=1", "--drain_timeout=120s",
       absl::StrCat("--metrics_listen=127.0.0.1:", *metrics_port)});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<Client> client = Client::Connect((*server)->target());
  ASSERT_TRUE(client.ok());
  // Tens of seconds of work: the drain cannot end on its own in time.
  const v1::FlashAttentionScoreRequest request = Request(32768, 128);
  std::thread caller([&] {
    absl::StatusOr<v1::FlashAttentionScoreResponse> r =
        client->FlashAttentionScore(request, absl::Seconds(120));
    EXPECT_FALSE(r.ok());
  });
  // Joins the caller on every path out of the test; stopping the server (at
  // once, if it is draining) ends its call.
  const absl::Cleanup join_caller = [&] {
    (*server)->Stop();
    caller.join();
  };
  // The request is about 50 MB: on a loaded machine it can take seconds to
  // arrive. Signal once it runs on the worker, so that the drain has a call
  // to wait for.
  ASSERT_GE(AwaitMetricAtLeast(*metrics_port, "attnserve_running_jobs", 1,
                               absl::Seconds(60)),
            1)
      << (*server)->log();
  (*server)->Signal(SIGTERM);
  // Once the server says it is draining it has taken the first signal (a
  // second one sent before that could merge with it).
  ASSERT_TRUE((*server)->AwaitLog("draining", absl::Seconds(30)))
      << (*server)->log();
  EXPECT_FALSE((*server)->WaitForExit(absl::Milliseconds(500)).has_value())
      << "the first SIGTERM must drain, not exit";
  const absl::Time second = absl::Now();
  (*server)->Signal(SIGTERM);
  const std::optional<int> exit_code =
      (*server)->WaitForExit(absl::Seconds(10));
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_EQ(*exit_code, 1);
  EXPECT_LT(absl::Now() - second, absl::Seconds(3));
  // It left the running call behind rather than waiting for it.
  EXPECT_THAT((*server)->log(),
              ::testing::HasSubstr("again: exiting without waiting for 1 "));
}

// A drain that runs out of time cancels what is left, and the whole shutdown
// ends within --drain_timeout + --shutdown_grace of the signal.
TEST(DrainE2eTest, ShutdownEndsWithinTheDrainTimeoutAndGrace) {
  absl::StatusOr<int> metrics_port = PickFreePort();
  ASSERT_TRUE(metrics_port.ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=1", "--threads_per_request=1", "--drain_timeout=1s",
       "--shutdown_grace=3s",
       absl::StrCat("--metrics_listen=127.0.0.1:", *metrics_port)});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<Client> client = Client::Connect((*server)->target());
  ASSERT_TRUE(client.ok());
  // Tens of seconds of work: the drain runs out.
  const v1::FlashAttentionScoreRequest request = Request(32768, 128);
  absl::Status call_status;
  std::thread caller([&] {
    call_status =
        client->FlashAttentionScore(request, absl::Seconds(120)).status();
  });
  const absl::Cleanup join_caller = [&] {
    (*server)->Stop();
    if (caller.joinable()) caller.join();
  };
  ASSERT_GE(AwaitMetricAtLeast(*metrics_port, "attnserve_running_jobs", 1,
                               absl::Seconds(60)),
            1)
      << (*server)->log();
  const absl::Time signalled = absl::Now();
  (*server)->Signal(SIGTERM);
  const std::optional<int> exit_code =
      (*server)->WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.has_value()) << (*server)->log();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(1 + 3 + 1));
  // Cancelled in time: a clean stop.
  EXPECT_EQ(*exit_code, 0) << (*server)->log();
  EXPECT_THAT((*server)->log(), ::testing::HasSubstr("exiting within 4s"));
  EXPECT_THAT((*server)->log(), ::testing::HasSubstr("drain timeout"));
  caller.join();
  EXPECT_EQ(call_status.code(), absl::StatusCode::kCancelled) << call_status;
}

}  // namespace
}  // namespace attnserve::e2e
