#include "attnserve/core/buffer_pool.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "mapped_block.h"

namespace attnserve::core {
namespace {

char* MapBlockOrThrow(size_t capacity) {
  char* data = MapBlock(capacity);
  if (data == nullptr) throw std::bad_alloc();
  return data;
}

struct Block {
  char* data;
  size_t capacity;
};

void UnmapBlocks(const std::vector<Block>& blocks) {
  for (const Block& b : blocks) UnmapBlock(b.data, b.capacity);
}

}  // namespace

struct BufferPool::Core {
  struct Idle {
    char* data;
    absl::Time since;
  };

  explicit Core(uint64_t max_idle) : max_idle_bytes(max_idle) {}

  // Moves the least recently used idle block to `out`.
  void EvictOldest(std::vector<Block>* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto oldest = idle.begin();
    for (auto it = idle.begin(); it != idle.end(); ++it) {
      if (it->second.since < oldest->second.since) oldest = it;
    }
    out->push_back(Block{oldest->second.data, oldest->first});
    idle_bytes -= oldest->first;
    ++freed;
    idle.erase(oldest);
  }

  // Where a block's last owner sends it.
  void Return(char* data, size_t capacity) {
    std::vector<Block> victims;
    {
      absl::MutexLock lock(&mu);
      in_use_bytes -= capacity;
      if (closed) {
        victims.push_back(Block{data, capacity});
        ++freed;
      } else {
        idle.emplace(capacity, Idle{data, absl::Now()});
        idle_bytes += capacity;
        while (max_idle_bytes != 0 && idle_bytes > max_idle_bytes) {
          EvictOldest(&victims);
        }
      }
    }
    UnmapBlocks(victims);
  }

  const uint64_t max_idle_bytes;
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
  // Idle blocks by capacity.
  std::multimap<size_t, Idle> idle ABSL_GUARDED_BY(mu);
  uint64_t idle_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t in_use_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t peak_in_use_bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t acquired ABSL_GUARDED_BY(mu) = 0;
  uint64_t reused ABSL_GUARDED_BY(mu) = 0;
  uint64_t freed ABSL_GUARDED_BY(mu) = 0;
};

BufferPool::BufferPool(const BufferPoolOptions& options)
    : options_(options),
      core_(std::make_shared<Core>(options.max_idle_bytes)) {}

BufferPool::~BufferPool() {
  std::vector<Block> victims;
  {
    absl::MutexLock lock(&core_->mu);
    core_->closed = true;
    for (const auto& [capacity, idle] : core_->idle) {
      victims.push_back(Block{idle.data, capacity});
    }
    core_->idle.clear();
    core_->idle_bytes = 0;
  }
  UnmapBlocks(victims);
}

Buffer BufferPool::Acquire(size_t size) { return Get(size, false); }

Buffer BufferPool::AcquireZeroed(size_t size) { return Get(size, true); }

Buffer BufferPool::Get(size_t size, bool zeroed) {
  if (size < options_.min_pooled_bytes) return Buffer(size);
  const size_t want = MappedBlockCapacity(size);
  char* data = nullptr;
  size_t capacity = want;
  std::vector<Block> victims;
  {
    Core& c = *core_;
    absl::MutexLock lock(&c.mu);
    ++c.acquired;
    auto it = c.idle.lower_bound(want);
    if (it != c.idle.end() && it->first / 2 <= want) {
      data = it->second.data;
      capacity = it->first;
      c.idle_bytes -= capacity;
      c.idle.erase(it);
      ++c.reused;
    } else {
      // Hold no more than the most ever in use at once (or what this
      // request makes in use, if that is more).
      const uint64_t limit =
          std::max(c.peak_in_use_bytes, c.in_use_bytes + capacity);
      while (c.idle_bytes > 0 &&
             c.in_use_bytes + capacity + c.idle_bytes > limit) {
        c.EvictOldest(&victims);
      }
    }
    c.in_use_bytes += capacity;
    c.peak_in_use_bytes = std::max(c.peak_in_use_bytes, c.in_use_bytes);
  }
  UnmapBlocks(victims);
  if (data == nullptr) {
    data = MapBlockOrThrow(capacity);  // Zero-filled by the kernel.
  } else if (zeroed) {
    std::memset(data, 0, size);
  }
  return Buffer::Adopt(data, size, capacity, [core = core_, capacity](char* p) {
    core->Return(p, capacity);
  });
}

uint64_t BufferPool::TrimIdle(absl::Time now) {
  std::vector<Block> victims;
  uint64_t bytes = 0;
  {
    absl::MutexLock lock(&core_->mu);
    const absl::Time cutoff = now - options_.idle_ttl;
    for (auto it = core_->idle.begin(); it != core_->idle.end();) {
      if (it->second.since <= cutoff) {
        victims.push_back(Block{it->second.data, it->first});
        bytes += it->first;
        ++core_->freed;
        it = core_->idle.erase(it);
      } else {
        ++it;
      }
    }
    core_->idle_bytes -= bytes;
  }
  UnmapBlocks(victims);
  return bytes;
}

uint64_t BufferPool::TrimAll() { return TrimIdle(absl::InfiniteFuture()); }

BufferPoolStats BufferPool::stats() const {
  absl::MutexLock lock(&core_->mu);
  BufferPoolStats s;
  s.in_use_bytes = core_->in_use_bytes;
  s.idle_bytes = core_->idle_bytes;
  s.peak_in_use_bytes = core_->peak_in_use_bytes;
  s.acquired = core_->acquired;
  s.reused = core_->reused;
  s.freed = core_->freed;
  return s;
}

}  // namespace attnserve::core
