// A request the client abandons stops computing and frees its worker.
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

v1::FlashAttentionScoreRequest Request(int64_t seq, int64_t head_dim) {
  const Bnsd dims{1, 1, seq, head_dim};
  const std::vector<double> values = RandomValues(dims.count(), 7);
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", dims, values);
  *r.mutable_key() = Pack("BNSD", dims, values);
  *r.mutable_value() = Pack("BNSD", dims, values);
  r.set_head_num(1);
  r.set_input_layout("BNSD");
  return r;
}

// With one worker, a small request queued behind a big one waits for the big
// one unless cancelling the big one stops it between tiles. The big one is
// sized to take far longer than the bound the small one's queue time is
// checked against: 2.2 TFLOP (S 131072, D 32: the FLOPs of a long sequence
// in the bytes of a short one), over 8 s even at the 270 GFLOP/s of a fast
// two-core AVX-512 host, and over a minute on one slow core.
class ServerCancelTest : public ::testing::Test {
 protected:
  static ServerOptions OneWorker() {
    ServerOptions options = TestServer::DefaultOptions();
    options.workers = 1;
    return options;
  }

  // Built before any deadline starts: packing 48 MiB takes a while.
  void SetUp() override {
    big_request_ = Request(/*seq=*/131072, /*head_dim=*/32);
  }

  // Starts the big request; returns once the worker is busy with it (48 MiB
  // take a while to arrive on a loaded machine), or it has ended.
  void StartBigRequest(grpc::ClientContext* context) {
    server_.stub().async()->FlashAttentionScore(
        context, &big_request_, &big_response_, [this](grpc::Status status) {
          big_status_ = std::move(status);
          big_done_.Notify();
        });
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (server_.server().running_jobs() == 0 &&
           !big_done_.HasBeenNotified() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(server_.server().running_jobs(), 1)
        << "the big request never ran: " << big_status_.error_message();
  }

  // Runs a tiny request; returns how long it waited for the worker.
  double SmallRequestQueueSeconds() {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::FlashAttentionScoreResponse response;
    grpc::Status status = server_.stub().FlashAttentionScore(
        &context, Request(/*seq=*/4, /*head_dim=*/8), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.stats().queue_seconds();
  }

  TestServer server_{OneWorker()};
  v1::FlashAttentionScoreRequest big_request_;
  v1::FlashAttentionScoreResponse big_response_;
  grpc::Status big_status_;
  absl::Notification big_done_;
};

TEST_F(ServerCancelTest, ClientCancellationStopsTheRunningJob) {
  ASSERT_TRUE(server_.started());
  grpc::ClientContext big_context;
  SetTestDeadline(&big_context, absl::Seconds(120));
  StartBigRequest(&big_context);
  big_context.TryCancel();
  EXPECT_LT(SmallRequestQueueSeconds(), 3.0);
  ASSERT_TRUE(big_done_.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(big_status_.error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ServerCancelTest, DeadlineStopsTheRunningJob) {
  ASSERT_TRUE(server_.started());
  grpc::ClientContext big_context;
  // Time for the request to arrive and start (0.6-0.8 s on a loaded
  // machine) and to run a while: far less than it needs.
  const absl::Time big_deadline = absl::Now() + absl::Seconds(3);
  big_context.set_deadline(absl::ToChronoTime(big_deadline));
  StartBigRequest(&big_context);
  // The small request waits for the rest of the big one's time, then for
  // the worker to stop within a few tiles (the same allowance as for a
  // cancellation).
  const absl::Duration left = big_deadline - absl::Now();
  EXPECT_LT(SmallRequestQueueSeconds(), absl::ToDoubleSeconds(left) + 3.0);
  ASSERT_TRUE(big_done_.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(big_status_.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace attnserve::server::testing
