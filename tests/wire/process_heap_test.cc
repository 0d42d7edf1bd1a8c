// HeapBytesInUse follows what is allocated, not what the process keeps.
#include "attnserve/wire/process_heap.h"

#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace attnserve::wire {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(ProcessHeapTest, GrowsWithAllocationsAndShrinksWhenTheyAreFreed) {
  const int64_t before = HeapBytesInUse();
  ASSERT_GT(before, 0);
  // Both kinds of block: many small ones (from an arena) and large ones
  // (mmap'ed by default), 32 MiB in all, touched so that they are real.
  std::vector<void*> blocks;
  for (int i = 0; i < 16 * 1024; ++i) blocks.push_back(std::malloc(1024));
  for (int i = 0; i < 4; ++i) blocks.push_back(std::malloc(4 * kMiB));
  for (size_t i = 0; i < blocks.size(); ++i) {
    ASSERT_NE(blocks[i], nullptr);
    std::memset(blocks[i], 1, i < 16 * 1024 ? 1024 : 4 * kMiB);
  }
  const int64_t held = HeapBytesInUse();
  EXPECT_GE(held - before, 32 * kMiB);
  EXPECT_LT(held - before, 40 * kMiB);
  for (void* block : blocks) std::free(block);
  // Freed memory an arena keeps for reuse no longer counts.
  EXPECT_LT(HeapBytesInUse() - before, kMiB);
}

TEST(ProcessHeapTest, HugePageTunableIsAddedToWhatIsGiven) {
  EXPECT_EQ(TunablesWithHugePageHeap(nullptr), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(TunablesWithHugePageHeap(""), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(TunablesWithHugePageHeap("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1");
  EXPECT_EQ(
      TunablesWithHugePageHeap("glibc.malloc.tcache_count=0:glibc.rtld.nns=4"),
      "glibc.malloc.tcache_count=0:glibc.rtld.nns=4:glibc.malloc.hugetlb=1");
}

TEST(ProcessHeapTest, HugePageTunableAlreadyNamedIsLeftAlone) {
  EXPECT_EQ(TunablesWithHugePageHeap("glibc.malloc.hugetlb=0"), std::nullopt);
  EXPECT_EQ(TunablesWithHugePageHeap("glibc.malloc.hugetlb=1"), std::nullopt);
  EXPECT_EQ(TunablesWithHugePageHeap(
                "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"),
            std::nullopt);
  // A name that only begins the same is another tunable.
  EXPECT_EQ(TunablesWithHugePageHeap("glibc.malloc.hugetlbx=1"),
            "glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1");
}

}  // namespace
}  // namespace attnserve::wire
