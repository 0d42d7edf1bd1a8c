// Buffers (owned, copied like strings, shared on request) and their pool:
// reuse of returned blocks, the bound on what the pool holds, the idle cap
// and trimming, zero-filling, and buffers that outlive their pool.
#include "attnserve/core/buffer_pool.h"

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "attnserve/core/buffer.h"
#include "attnserve/core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve::core {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(BufferTest, CopiesLikeAStringAndSharesOnRequest) {
  Buffer a(std::string("hello").data(), 5);
  Buffer copy = a;  // A copy: its own bytes.
  copy[0] = 'j';
  EXPECT_EQ(a.view(), "hello");
  EXPECT_EQ(copy.view(), "jello");
  Buffer shared = a.Share();  // The same bytes.
  EXPECT_EQ(shared.data(), a.data());
  EXPECT_EQ(a.use_count(), 2);
  shared[0] = 'c';
  EXPECT_EQ(a.view(), "cello");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
}

TEST(BufferTest, EditsLikeAString) {
  Buffer b;
  EXPECT_TRUE(b.empty());
  EXPECT_NE(b.data(), nullptr);
  b.resize(3);
  EXPECT_EQ(b.view(), std::string(3, '\0'));
  b.assign(4, 'x');
  EXPECT_EQ(b.view(), "xxxx");
  b.assign("ab", 2);
  EXPECT_EQ(b.view(), "ab");
  b.resize(4);
  EXPECT_EQ(b.view(), std::string("ab\0\0", 4));
  EXPECT_TRUE(b == std::string("ab\0\0", 4));
  // Editing a shared buffer moves it to its own block; the other owner keeps
  // the old bytes.
  Buffer other = b.Share();
  b.assign(2, 'z');
  EXPECT_EQ(other.view(), std::string("ab\0\0", 4));
  EXPECT_EQ(b.view(), "zz");
}

TEST(BufferTest, RefsForCallbacksKeepTheBytesAlive) {
  BufferPool pool;
  void* ref = nullptr;
  {
    Buffer b = pool.Acquire(kMiB);
    std::memset(b.data(), 7, b.size());
    ref = b.NewRef();
  }
  EXPECT_EQ(pool.stats().in_use_bytes, kMiB);  // Held by the ref.
  Buffer::DropRef(ref);
  EXPECT_EQ(pool.stats().in_use_bytes, 0u);
  EXPECT_EQ(pool.stats().idle_bytes, kMiB);
}

TEST(BufferPoolTest, ReusesReturnedBlocks) {
  BufferPool pool;
  const char* first = nullptr;
  {
    Buffer b = pool.Acquire(5 * kMiB);
    first = b.data();
    EXPECT_EQ(b.size(), 5 * kMiB);
    EXPECT_EQ(b.capacity(), 6 * kMiB);  // Whole huge pages.
  }
  Buffer again = pool.Acquire(5 * kMiB + 1);  // Same class.
  EXPECT_EQ(again.data(), first);
  const BufferPoolStats s = pool.stats();
  EXPECT_EQ(s.acquired, 2u);
  EXPECT_EQ(s.reused, 1u);
  EXPECT_EQ(s.in_use_bytes, 6 * kMiB);
  EXPECT_EQ(s.idle_bytes, 0u);
}

TEST(BufferPoolTest, ZeroFillsReusedBlocks) {
  BufferPool pool;
  {
    Buffer b = pool.Acquire(kMiB);
    std::memset(b.data(), 0xab, b.size());
  }
  Buffer z = pool.AcquireZeroed(kMiB);
  EXPECT_EQ(pool.stats().reused, 1u);
  for (size_t i = 0; i < z.size(); i += 4093) ASSERT_EQ(z[i], 0) << i;
  EXPECT_EQ(z[z.size() - 1], 0);
}

TEST(BufferPoolTest, SmallRequestsDoNotPinBigBlocks) {
  BufferPool pool;
  { Buffer big = pool.Acquire(64 * kMiB); }
  Buffer small = pool.Acquire(8 * kMiB);  // 64 MiB > 2 x 8 MiB: not reused.
  EXPECT_EQ(pool.stats().reused, 0u);
  EXPECT_EQ(small.capacity(), 8 * kMiB);
}

TEST(BufferPoolTest, HoldsNoMoreThanThePeakInUse) {
  // Sizes that never fit each other's blocks: without the bound the pool
  // would keep every one of them.
  BufferPool pool;
  uint64_t peak = 0;
  for (size_t mib : {4, 12, 30, 70, 3, 150, 9, 40}) {
    Buffer in = pool.Acquire(mib * kMiB);
    Buffer out = pool.Acquire(mib * kMiB / 2 + kMiB);
    const BufferPoolStats s = pool.stats();
    peak = std::max<uint64_t>(peak, s.in_use_bytes);
    EXPECT_LE(s.in_use_bytes + s.idle_bytes, s.peak_in_use_bytes) << mib;
  }
  const BufferPoolStats s = pool.stats();
  EXPECT_EQ(s.peak_in_use_bytes, peak);
  EXPECT_LE(s.idle_bytes, peak);
  EXPECT_GT(s.freed, 0u);
}

TEST(BufferPoolTest, CapsIdleBytes) {
  BufferPoolOptions options;
  options.max_idle_bytes = 5 * kMiB;
  BufferPool pool(options);
  {
    Buffer a = pool.Acquire(4 * kMiB);
    Buffer b = pool.Acquire(4 * kMiB);
  }  // Both return; only one fits under the cap.
  EXPECT_EQ(pool.stats().idle_bytes, 4 * kMiB);
  EXPECT_EQ(pool.stats().freed, 1u);
}

TEST(BufferPoolTest, TrimsBlocksIdleLongerThanTheirTtl) {
  BufferPoolOptions options;
  options.idle_ttl = absl::Seconds(10);
  BufferPool pool(options);
  { Buffer a = pool.Acquire(4 * kMiB); }
  EXPECT_EQ(pool.TrimIdle(absl::Now()), 0u);  // Not idle long enough.
  EXPECT_EQ(pool.stats().idle_bytes, 4 * kMiB);
  EXPECT_EQ(pool.TrimIdle(absl::Now() + absl::Seconds(11)), 4 * kMiB);
  EXPECT_EQ(pool.stats().idle_bytes, 0u);
  { Buffer b = pool.Acquire(2 * kMiB); }
  EXPECT_EQ(pool.TrimAll(), 2 * kMiB);
}

TEST(BufferPoolTest, SmallBuffersComeFromTheHeap) {
  BufferPool pool;
  Buffer b = pool.AcquireZeroed(100);
  EXPECT_EQ(b.size(), 100u);
  EXPECT_EQ(b[99], 0);
  EXPECT_EQ(pool.stats().acquired, 0u);
}

TEST(BufferPoolTest, BuffersMayOutliveThePool) {
  Buffer survivor;
  {
    BufferPool pool;
    survivor = pool.Acquire(3 * kMiB);
    std::memset(survivor.data(), 1, survivor.size());
  }
  EXPECT_EQ(survivor[3 * kMiB - 1], 1);
  survivor = Buffer();  // Freed, not returned: no crash, no leak (ASan).
}

TEST(BufferPoolTest, SharesMayBeDroppedOnOtherThreads) {
  BufferPool pool;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool] {
      for (int i = 0; i < 50; ++i) {
        Buffer b = pool.Acquire((1 + i % 3) * kMiB);
        Buffer s = b.Share();
        std::thread([s = std::move(s)]() mutable { s = Buffer(); }).join();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const BufferPoolStats s = pool.stats();
  EXPECT_EQ(s.in_use_bytes, 0u);
  EXPECT_GT(s.reused, 0u);
}

TEST(BufferPoolTest, HostTensorsFromThePoolAreZeroed) {
  BufferPool pool;
  {
    HostTensor t = MakeHostTensor(DType::kFloat32, {1024, 1024}, &pool);
    std::memset(t.bytes.data(), 0xff, t.bytes.size());
  }
  HostTensor t = MakeHostTensor(DType::kBFloat16, {2048, 1024}, &pool);
  EXPECT_EQ(t.bytes.size(), 4 * kMiB);
  EXPECT_EQ(pool.stats().reused, 1u);
  for (size_t i = 0; i < t.bytes.size(); i += 997) ASSERT_EQ(t.bytes[i], 0);
}

}  // namespace
}  // namespace attnserve::core
