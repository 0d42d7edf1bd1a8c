// A pool of workspace buffers owned by the engine and reused across requests.
//
//   WorkspacePool pool(/*budget_bytes=*/1 << 30);
//   absl::StatusOr<WorkspaceLease> lease = pool.Acquire(plan.workspace_bytes);
//   float* scratch = lease->floats();
//   // lease's destructor returns the buffer to the pool.
//
// The budget caps the bytes leased at once; a lease that would exceed it
// fails with RESOURCE_EXHAUSTED instead of allocating. Released buffers are
// kept and handed out again to requests that fit in them (the smallest that
// does); what the pool holds, leased and free, stays within the budget and
// within the most it ever leased at once: a lease that needs a new buffer
// first frees free ones, largest first, until it fits under that bound.
// Thread-safe.
#ifndef ATTNSERVE_CORE_WORKSPACE_POOL_H_
#define ATTNSERVE_CORE_WORKSPACE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace attnserve::core {

class WorkspacePool;

// A leased buffer, 64-byte aligned. Movable, not copyable.
class WorkspaceLease {
 public:
  WorkspaceLease() = default;
  WorkspaceLease(WorkspaceLease&& other) noexcept;
  WorkspaceLease& operator=(WorkspaceLease&& other) noexcept;
  ~WorkspaceLease();

  std::byte* data() const { return data_; }
  float* floats() const { return reinterpret_cast<float*>(data_); }
  size_t size() const { return size_; }

 private:
  friend class WorkspacePool;
  WorkspaceLease(WorkspacePool* pool, std::byte* data, size_t size,
                 size_t capacity)
      : pool_(pool), data_(data), size_(size), capacity_(capacity) {}
  void Release();

  WorkspacePool* pool_ = nullptr;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

class WorkspacePool {
 public:
  // budget_bytes = 0 means unlimited.
  explicit WorkspacePool(uint64_t budget_bytes);
  ~WorkspacePool();
  WorkspacePool(const WorkspacePool&) = delete;
  WorkspacePool& operator=(const WorkspacePool&) = delete;

  // A buffer of at least `bytes` bytes, or RESOURCE_EXHAUSTED when leasing it
  // would take the leased total over the budget.
  absl::StatusOr<WorkspaceLease> Acquire(uint64_t bytes);

  uint64_t budget_bytes() const { return budget_; }
  // Bytes currently leased out.
  uint64_t in_use_bytes() const;
  // Bytes held by the pool, leased or free.
  uint64_t reserved_bytes() const;

 private:
  friend class WorkspaceLease;
  void Return(std::byte* data, size_t capacity);

  struct FreeBuffer {
    std::byte* data;
    size_t capacity;
  };
  const uint64_t budget_;
  mutable absl::Mutex mu_;
  uint64_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
  // The most bytes leased at once so far.
  uint64_t peak_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<FreeBuffer> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_WORKSPACE_POOL_H_
