// A pool of large byte blocks reused across requests, so that tensors land
// in memory that is already mapped and warm.
//
// Touching freshly mapped memory costs a page fault per page, which on
// virtual machines runs at a few hundred MB/s, against more than 10 GB/s for
// a warm copy. The pool hands out Buffers (buffer.h) whose blocks come back
// to it when their last owner lets go, and hands those blocks out again.
//
//   BufferPool pool(BufferPoolOptions{.max_idle_bytes = 1 << 30});
//   Buffer out = pool.AcquireZeroed(bytes);
//   ...                                      // out (and its shares) dropped
//   pool.TrimIdle();                         // from a timer: idle -> freed
//
// Which block serves a request: the smallest idle block that holds it and
// is at most twice its size (so a small request does not pin a big block);
// otherwise a new block, 2 MiB-rounded and backed by transparent huge pages
// where the kernel offers them. Before mapping a new block the pool frees
// idle blocks, least recently used first, until everything it holds (in use
// plus idle) is no more than the most it ever had in use at once: memory
// stays bounded by the peak working set, however request sizes vary.
// Idle blocks are also freed once unused for `idle_ttl` (TrimIdle) and
// beyond `max_idle_bytes`.
//
// Buffers below `min_pooled_bytes` come from the heap, which serves small
// sizes warm anyway. Thread-safe; Buffers may outlive the pool (their blocks
// are then freed instead of returned).
#ifndef ATTNSERVE_CORE_BUFFER_POOL_H_
#define ATTNSERVE_CORE_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/core/buffer.h"

namespace attnserve::core {

struct BufferPoolOptions {
  // Requests below this size are plain heap buffers, not pooled.
  size_t min_pooled_bytes = size_t{64} << 10;
  // Cap on the bytes of idle blocks kept for reuse; 0 = only the peak
  // working-set rule above.
  uint64_t max_idle_bytes = 0;
  // Idle blocks unused this long are freed by TrimIdle().
  absl::Duration idle_ttl = absl::Seconds(10);
};

struct BufferPoolStats {
  // Bytes of blocks handed out and not yet back, and of idle blocks.
  uint64_t in_use_bytes = 0;
  uint64_t idle_bytes = 0;
  // The most bytes ever in use at once (the bound on what the pool holds).
  uint64_t peak_in_use_bytes = 0;
  // Pooled acquisitions, those served by an idle block, and blocks freed.
  uint64_t acquired = 0;
  uint64_t reused = 0;
  uint64_t freed = 0;
};

class BufferPool {
 public:
  explicit BufferPool(const BufferPoolOptions& options = {});
  // Frees the idle blocks; blocks in use are freed when they come back.
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of `size` bytes with unspecified contents.
  Buffer Acquire(size_t size);
  // The same, zero-filled (free for new blocks, which the kernel zeroes).
  Buffer AcquireZeroed(size_t size);

  // Frees the idle blocks unused since before `now - idle_ttl`; returns the
  // bytes freed.
  uint64_t TrimIdle(absl::Time now = absl::Now());
  // Frees every idle block; returns the bytes freed.
  uint64_t TrimAll();

  BufferPoolStats stats() const;
  const BufferPoolOptions& options() const { return options_; }

 private:
  struct Core;

  Buffer Get(size_t size, bool zeroed);

  const BufferPoolOptions options_;
  std::shared_ptr<Core> core_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_BUFFER_POOL_H_
