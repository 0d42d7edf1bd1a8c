// Allocation failures inside a run, injected with the host-tensor fault seam
// (attnserve/core/allocation_faults.h) and thrown from compute items: the
// failure leaves the run (as std::bad_alloc from the engine, as a
// RESOURCE_EXHAUSTED status from a parallel loop), nothing stays leased,
// and the next run is correct.
#include <atomic>
#include <new>
#include <stdexcept>

#include "attnserve/core/allocation_faults.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/prepared_call.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/parallel_for.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::test::AttentionCase;
using ::attnserve::test::CaseConfig;
using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

// Disarms the seam whatever the test does.
class AllocationFailureTest : public ::testing::Test {
 protected:
  void TearDown() override { FailNthHostAllocation(0); }
};

TEST_F(AllocationFailureTest, SeamFailsExactlyTheNthAllocationOnce) {
  FailNthHostAllocation(3);
  EXPECT_NO_THROW(MakeHostTensor(DType::kFloat32, {4}));
  EXPECT_NO_THROW(MakeHostTensor(DType::kFloat32, {4}));
  EXPECT_THROW(MakeHostTensor(DType::kFloat32, {4}), std::bad_alloc);
  EXPECT_NO_THROW(MakeHostTensor(DType::kFloat32, {4}));
  FailNthHostAllocation(1);
  FailNthHostAllocation(0);
  EXPECT_NO_THROW(MakeHostTensor(DType::kFloat32, {4}));
}

// An item that throws, on the caller's thread or a helper's, ends the loop
// with a status; the pool keeps working.
TEST_F(AllocationFailureTest, ThrowingItemsBecomeTheLoopStatus) {
  ComputePool pool(/*helpers=*/3);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> ran{0};
    absl::Status status =
        pool.ParallelFor(200, 4, [&](int64_t item, int) -> absl::Status {
          ran.fetch_add(1);
          if (item % 5 == 3) throw std::bad_alloc();
          return absl::OkStatus();
        });
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("out of memory")));
    status = pool.ParallelFor(50, 4, [](int64_t item, int) -> absl::Status {
      if (item == 7) throw std::runtime_error("broken item");
      return absl::OkStatus();
    });
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal,
                                 HasSubstr("broken item")));
  }
  std::atomic<int64_t> sum{0};
  EXPECT_THAT(pool.ParallelFor(100, 4,
                               [&](int64_t item, int) {
                                 sum.fetch_add(item);
                                 return absl::OkStatus();
                               }),
              IsOk());
  EXPECT_EQ(sum.load(), 99 * 100 / 2);
}

CaseConfig SmallCase() {
  CaseConfig config;
  config.dims = test::RefDims{1, 4, 2, 150, 170, 16, 16};
  return config;
}

// Every host allocation of a grad that recomputes its residuals (the
// recomputed forward's outputs, then dq/dk/dv) fails in turn: the run
// throws, releases its workspace, and the same engine then computes the
// right answer.
TEST_F(AllocationFailureTest, EveryAllocationOfABackwardRunCanFail) {
  AttentionCase c(SmallCase());
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardCall call,
                            BackwardCall::Prepare(c.backward_args(nullptr), 2));
  Engine engine(EngineOptions{.intra_op_threads = 2});
  const int64_t before = HostAllocationCount();
  {
    CancelToken token;
    ATTN_ASSERT_OK_AND_ASSIGN(BackwardResult warm, engine.Run(call, token));
  }
  const int64_t per_run = HostAllocationCount() - before;
  ASSERT_GE(per_run, 6);  // 3 recomputed residuals + dq, dk, dv.
  for (int64_t n = 1; n <= per_run; ++n) {
    SCOPED_TRACE(n);
    FailNthHostAllocation(n);
    CancelToken token;
    EXPECT_THROW((void)engine.Run(call, token), std::bad_alloc);
    EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
  }
  FailNthHostAllocation(0);
  CancelToken token;
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardResult grad, engine.Run(call, token));
  test::ExpectBackwardMatches(c, grad, test::TolerancesFor(DType::kFloat32));
}

}  // namespace
}  // namespace attnserve::core
