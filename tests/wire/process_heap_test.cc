// HeapBytesInUse follows what is allocated, not what the process keeps.
#include "attnserve/wire/process_heap.h"

#include <cstdlib>
#include <cstring>
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

}  // namespace
}  // namespace attnserve::wire
