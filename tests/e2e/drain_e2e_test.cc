// SIGTERM on the real process: health flips to NOT_SERVING, new calls are
// refused with UNAVAILABLE, every call in flight completes, the process
// exits 0; a second SIGTERM exits at once.
#include <signal.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

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

TEST(DrainE2eTest, SigtermDuringLoadLosesNoCallInFlight) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=2", "--threads_per_request=1", "--drain_timeout=60s"});
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
  absl::SleepFor(absl::Seconds(1));
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
  ASSERT_TRUE(exit_code.has_value()) << "still running 60 s after SIGTERM";
  EXPECT_EQ(*exit_code, 0) << (*server)->log();
  EXPECT_TRUE(saw_not_serving);

  int in_flight_at_signal = 0;
  int refused = 0;
  for (const CallRecord& call : calls) {
    // Started well before the signal: admitted, so it must have completed.
    if (call.start < signalled - absl::Milliseconds(100)) {
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
    if (call.code == absl::StatusCode::kUnavailable) ++refused;
  }
  EXPECT_GE(in_flight_at_signal, 1);
  EXPECT_GE(refused, 1);
  EXPECT_THAT((*server)->log(), ::testing::HasSubstr("draining"));
}

TEST(DrainE2eTest, SecondSigtermExitsAtOnce) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=1", "--threads_per_request=1", "--drain_timeout=120s"});
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
  absl::SleepFor(absl::Milliseconds(800));
  (*server)->Signal(SIGTERM);
  EXPECT_FALSE((*server)->WaitForExit(absl::Milliseconds(500)).has_value())
      << "the first SIGTERM must drain, not exit";
  const absl::Time second = absl::Now();
  (*server)->Signal(SIGTERM);
  const std::optional<int> exit_code =
      (*server)->WaitForExit(absl::Seconds(10));
  ASSERT_TRUE(exit_code.has_value());
  EXPECT_EQ(*exit_code, 1);
  EXPECT_LT(absl::Now() - second, absl::Seconds(3));
  caller.join();
  EXPECT_THAT((*server)->log(), ::testing::HasSubstr("again"));
}

}  // namespace
}  // namespace attnserve::e2e
