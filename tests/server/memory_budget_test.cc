// The one memory budget shared by admitted jobs and resident tensors.
#include "server/memory_budget.h"

#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(MemoryBudgetTest, AccountsShareTheBudget) {
  MemoryBudget budget(100);
  ASSERT_THAT(budget.TryReserve(MemoryBudget::kRequests, 60), IsOk());
  ASSERT_THAT(budget.TryReserve(MemoryBudget::kTensors, 30), IsOk());
  EXPECT_EQ(budget.used(MemoryBudget::kRequests), 60u);
  EXPECT_EQ(budget.used(MemoryBudget::kTensors), 30u);
  EXPECT_EQ(budget.used(), 90u);
  // A request that would fit alone does not fit beside the tensors.
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kRequests, 20),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("the request needs 20 bytes but 90 of "
                                       "100 bytes are held (60 by requests in "
                                       "flight, 30 by resident tensors)"),
                             HasSubstr("10 free"))));
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kTensors, 11),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("storing 11 bytes of tensors"),
                             HasSubstr("10 free"), HasSubstr("DeleteTensor"))));
  budget.Release(MemoryBudget::kRequests, 60);
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kRequests, 20), IsOk());
  EXPECT_EQ(budget.used(), 50u);
}

TEST(MemoryBudgetTest, MoreThanTheWholeBudgetSaysSo) {
  MemoryBudget budget(100);
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kTensors, 101),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("more than the whole budget of 100 bytes")));
  EXPECT_EQ(budget.used(), 0u);
}

TEST(MemoryBudgetTest, ZeroBudgetIsUnlimitedButAccountCapsStillHold) {
  MemoryBudget budget(0);
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kRequests, uint64_t{1} << 62),
              IsOk());
  ASSERT_THAT(budget.TryReserve(MemoryBudget::kTensors, 40, /*cap=*/50),
              IsOk());
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kTensors, 11, /*cap=*/50),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("tensor store: storing 11 bytes"),
                             HasSubstr("10 of its 50 bytes are free"),
                             HasSubstr("--tensor_store_bytes"))));
  EXPECT_THAT(budget.TryReserve(MemoryBudget::kTensors, 10, /*cap=*/50),
              IsOk());
}

TEST(MemoryBudgetTest, ReservationsGiveTheirBytesBackOnce) {
  MemoryBudget budget(100);
  {
    absl::StatusOr<MemoryReservation> held =
        budget.Reserve(MemoryBudget::kTensors, 70);
    ASSERT_THAT(held, IsOk());
    MemoryReservation part = held->Split(30);
    EXPECT_EQ(held->bytes(), 40u);
    EXPECT_EQ(part.bytes(), 30u);
    MemoryReservation moved = std::move(part);
    EXPECT_EQ(budget.used(), 70u);
    moved.Reset();
    EXPECT_EQ(budget.used(), 40u);
    moved.Reset();  // Nothing left to give back.
    EXPECT_EQ(budget.used(), 40u);
  }
  EXPECT_EQ(budget.used(), 0u);
}

}  // namespace
}  // namespace attnserve::server
