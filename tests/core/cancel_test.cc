// CancelToken states, and a run that starts with a cancelled token.
#include "attnserve/core/cancel.h"

#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::test::AttentionCase;
using ::attnserve::test::CaseConfig;
using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;

TEST(CancelTokenTest, FreshTokenIsOk) {
  CancelToken token;
  EXPECT_FALSE(token.cancelled());
  EXPECT_EQ(token.deadline(), absl::InfiniteFuture());
  EXPECT_THAT(token.Check(), IsOk());
}

TEST(CancelTokenTest, CancelGivesCancelled) {
  CancelToken token;
  token.Cancel();
  EXPECT_TRUE(token.cancelled());
  EXPECT_THAT(token.Check(), StatusIs(absl::StatusCode::kCancelled));
}

TEST(CancelTokenTest, PastDeadlineGivesDeadlineExceeded) {
  CancelToken token(absl::Now() - absl::Seconds(1));
  EXPECT_THAT(token.Check(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(CancelTokenTest, FutureDeadlineIsOkUntilItPasses) {
  CancelToken token(absl::Now() + absl::Milliseconds(50));
  EXPECT_THAT(token.Check(), IsOk());
  absl::SleepFor(absl::Milliseconds(80));
  EXPECT_THAT(token.Check(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(CancelTokenTest, CancelFromAnotherThreadIsSeen) {
  CancelToken token(absl::Now() + absl::Hours(1));
  std::thread canceller([&token] { token.Cancel(); });
  canceller.join();
  EXPECT_THAT(token.Check(), StatusIs(absl::StatusCode::kCancelled));
}

// A forward/backward case small enough to run in a moment.
CaseConfig SmallCase() {
  CaseConfig config;
  config.dims = test::RefDims{1, 2, 2, 33, 47, 16, 16};
  return config;
}

TEST(CancelledRunTest, ForwardWithCancelledTokenReturnsCancelled) {
  AttentionCase c(SmallCase());
  const ForwardArgs args = c.forward_args();
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardCall call, ForwardCall::Prepare(args));
  Engine engine(EngineOptions{});
  CancelToken token;
  token.Cancel();
  EXPECT_THAT(engine.Run(call, token), StatusIs(absl::StatusCode::kCancelled));
  // Nothing stays leased after the early return.
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
}

TEST(CancelledRunTest, ForwardPastDeadlineReturnsDeadlineExceeded) {
  AttentionCase c(SmallCase());
  const ForwardArgs args = c.forward_args();
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardCall call, ForwardCall::Prepare(args, 2));
  Engine engine(EngineOptions{});
  CancelToken token(absl::Now() - absl::Milliseconds(1));
  EXPECT_THAT(engine.Run(call, token),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(CancelledRunTest, BackwardWithCancelledTokenReturnsCancelled) {
  AttentionCase c(SmallCase());
  const BackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardCall call, BackwardCall::Prepare(args));
  Engine engine(EngineOptions{});
  CancelToken token;
  token.Cancel();
  EXPECT_THAT(engine.Run(call, token), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
}

TEST(CancelledRunTest, SameRunWithLiveTokenSucceeds) {
  // Guards the tests above: the arguments themselves are fine.
  AttentionCase c(SmallCase());
  const ForwardArgs args = c.forward_args();
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardCall call, ForwardCall::Prepare(args));
  Engine engine(EngineOptions{});
  CancelToken token(absl::Now() + absl::Minutes(1));
  EXPECT_THAT(engine.Run(call, token), IsOk());
}

}  // namespace
}  // namespace attnserve::core
