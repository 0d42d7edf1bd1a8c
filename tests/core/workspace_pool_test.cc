// WorkspacePool: reuse, budget, accounting and concurrent use.
#include "attnserve/core/workspace_pool.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;

TEST(WorkspacePoolTest, LeaseIsLargeEnoughAlignedAndWritable) {
  WorkspacePool pool(0);
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease lease, pool.Acquire(1000));
  ASSERT_NE(lease.data(), nullptr);
  EXPECT_GE(lease.size(), 1000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(lease.data()) % 64, 0u);
  EXPECT_EQ(static_cast<void*>(lease.floats()),
            static_cast<void*>(lease.data()));
  std::memset(lease.data(), 0x5A, 1000);
  EXPECT_GE(pool.in_use_bytes(), 1000u);
  EXPECT_GE(pool.reserved_bytes(), pool.in_use_bytes());
}

TEST(WorkspacePoolTest, ReleasedBufferIsReused) {
  WorkspacePool pool(0);
  std::byte* first = nullptr;
  {
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease lease, pool.Acquire(4096));
    first = lease.data();
  }
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  const uint64_t reserved = pool.reserved_bytes();
  EXPECT_GE(reserved, 4096u);
  {
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease same, pool.Acquire(4096));
    EXPECT_EQ(same.data(), first);
    EXPECT_EQ(pool.reserved_bytes(), reserved);  // No new allocation.
  }
  {
    // A smaller request fits in the kept buffer too.
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease smaller, pool.Acquire(1000));
    EXPECT_EQ(smaller.data(), first);
    EXPECT_EQ(pool.reserved_bytes(), reserved);
  }
}

TEST(WorkspacePoolTest, TwoLiveLeasesAreDistinct) {
  WorkspacePool pool(0);
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease a, pool.Acquire(256));
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease b, pool.Acquire(256));
  EXPECT_NE(a.data(), b.data());
  EXPECT_GE(pool.in_use_bytes(), 512u);
}

TEST(WorkspacePoolTest, OverBudgetIsResourceExhausted) {
  WorkspacePool pool(1 << 20);
  EXPECT_EQ(pool.budget_bytes(), 1u << 20);
  EXPECT_THAT(pool.Acquire((1 << 20) + 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease a, pool.Acquire(600 << 10));
  // Together with the live lease this passes the budget.
  EXPECT_THAT(pool.Acquire(600 << 10),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_LE(pool.in_use_bytes(), pool.budget_bytes());
  // Once released, the same request fits again.
  a = WorkspaceLease();
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease b, pool.Acquire(600 << 10));
  EXPECT_NE(b.data(), nullptr);
}

TEST(WorkspacePoolTest, ExactBudgetFits) {
  WorkspacePool pool(1 << 16);
  EXPECT_THAT(pool.Acquire(1 << 16), IsOk());
}

TEST(WorkspacePoolTest, InUseFollowsLeasesAndMoves) {
  WorkspacePool pool(0);
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease a, pool.Acquire(1000));
  const uint64_t one = pool.in_use_bytes();
  EXPECT_GE(one, 1000u);
  {
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease b, pool.Acquire(3000));
    EXPECT_GE(pool.in_use_bytes(), one + 3000);
  }
  EXPECT_EQ(pool.in_use_bytes(), one);
  // Moving a lease does not release it; the moved-from lease is empty.
  WorkspaceLease moved(std::move(a));
  EXPECT_EQ(pool.in_use_bytes(), one);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  WorkspaceLease assigned;
  assigned = std::move(moved);
  EXPECT_EQ(pool.in_use_bytes(), one);
  // Assigning over a live lease releases what it held.
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease c, pool.Acquire(500));
  const uint64_t both = pool.in_use_bytes();
  EXPECT_GE(both, one + 500);
  assigned = std::move(c);
  EXPECT_EQ(pool.in_use_bytes(), both - one);
  assigned = WorkspaceLease();
  EXPECT_EQ(pool.in_use_bytes(), 0u);
}

// Releases and re-leases of mixed sizes: the pool must never hold more
// than the budget once buffers come back, and leases must never add up to
// more than the budget, even when a request is served from a larger free
// buffer.
TEST(WorkspacePoolTest, MixedSizesKeepLeasesAndHeldBytesWithinBudget) {
  constexpr uint64_t kBudget = 4096;
  WorkspacePool pool(kBudget);
  {
    std::vector<WorkspaceLease> quarters;
    for (int i = 0; i < 4; ++i) {
      ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease lease, pool.Acquire(1024));
      quarters.push_back(std::move(lease));
    }
    EXPECT_THAT(pool.Acquire(64),
                StatusIs(absl::StatusCode::kResourceExhausted));
  }
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  {
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease half, pool.Acquire(2048));
    EXPECT_LE(pool.in_use_bytes(), kBudget);
  }
  EXPECT_LE(pool.reserved_bytes(), kBudget) << "after releasing everything";
  std::vector<WorkspaceLease> leases;
  for (uint64_t bytes : {1024, 1024, 1024, 64, 64}) {
    absl::StatusOr<WorkspaceLease> lease = pool.Acquire(bytes);
    if (lease.ok()) {
      leases.push_back(std::move(*lease));
    } else {
      EXPECT_THAT(lease, StatusIs(absl::StatusCode::kResourceExhausted));
    }
    EXPECT_LE(pool.in_use_bytes(), kBudget) << "after asking for " << bytes;
  }
  leases.clear();
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  EXPECT_LE(pool.reserved_bytes(), kBudget);
}

// Requests of growing sizes, one at a time: the pool holds the largest
// workspace, not the sum of every size it was asked for.
TEST(WorkspacePoolTest, GrowingLeasesOneAtATimeHoldOnlyTheLargest) {
  WorkspacePool pool(/*budget_bytes=*/0);
  for (uint64_t bytes : {1024, 4096, 16384, 65536}) {
    ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease lease, pool.Acquire(bytes));
    EXPECT_EQ(pool.reserved_bytes(), bytes) << "leasing " << bytes;
  }
  // Smaller ones then reuse the largest.
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease small, pool.Acquire(1024));
  EXPECT_EQ(pool.reserved_bytes(), 65536u);
  // Two at once: the peak is both, and both are kept.
  ATTN_ASSERT_OK_AND_ASSIGN(WorkspaceLease second, pool.Acquire(4096));
  EXPECT_EQ(pool.reserved_bytes(), 65536u + 4096u);
}

TEST(WorkspacePoolTest, ManyThreadsNeverShareABufferOrPassTheBudget) {
  constexpr uint64_t kBudget = 256 << 10;
  WorkspacePool pool(kBudget);
  constexpr int kThreads = 8;
  constexpr int kIterations = 300;
  std::atomic<int> corrupted{0}, over_budget{0}, granted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 gen(static_cast<unsigned>(t));
      for (int it = 0; it < kIterations; ++it) {
        const size_t bytes = 64 + gen() % (64 << 10);
        absl::StatusOr<WorkspaceLease> lease = pool.Acquire(bytes);
        if (!lease.ok()) {
          if (lease.status().code() != absl::StatusCode::kResourceExhausted) {
            ++corrupted;
          }
          ++refused;
          continue;
        }
        ++granted;
        if (pool.in_use_bytes() > kBudget) ++over_budget;
        // Fill with a thread-specific byte, yield, and check it survived.
        const auto fill = static_cast<unsigned char>(t + 1);
        std::memset(lease->data(), fill, bytes);
        std::this_thread::yield();
        const auto* p = reinterpret_cast<const unsigned char*>(lease->data());
        for (size_t i = 0; i < bytes; i += 61) {
          if (p[i] != fill) {
            ++corrupted;
            break;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(corrupted.load(), 0);
  EXPECT_EQ(over_budget.load(), 0);
  EXPECT_GT(granted.load(), 0);
  EXPECT_EQ(granted.load() + refused.load(), kThreads * kIterations);
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  EXPECT_LE(pool.reserved_bytes(), kBudget);
}

}  // namespace
}  // namespace attnserve::core
