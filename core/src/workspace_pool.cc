#include "attnserve/core/workspace_pool.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "absl/strings/str_cat.h"
#include "mapped_block.h"

namespace attnserve::core {
namespace {

constexpr size_t kAlignment = 64;

size_t RoundUp(uint64_t bytes) {
  const uint64_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  return static_cast<size_t>(std::max<uint64_t>(rounded, kAlignment));
}

// Workspaces are mapped blocks (mapped_block.h), rounded up there; the pool
// counts the bytes asked for.
std::byte* Map(size_t capacity) {
  return reinterpret_cast<std::byte*>(MapBlock(MappedBlockCapacity(capacity)));
}

void Unmap(std::byte* data, size_t capacity) {
  UnmapBlock(reinterpret_cast<char*>(data), MappedBlockCapacity(capacity));
}

}  // namespace

WorkspaceLease::WorkspaceLease(WorkspaceLease&& other) noexcept
    : pool_(other.pool_),
      data_(other.data_),
      size_(other.size_),
      capacity_(other.capacity_) {
  other.pool_ = nullptr;
  other.data_ = nullptr;
}

WorkspaceLease& WorkspaceLease::operator=(WorkspaceLease&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.pool_ = nullptr;
    other.data_ = nullptr;
  }
  return *this;
}

WorkspaceLease::~WorkspaceLease() { Release(); }

void WorkspaceLease::Release() {
  if (pool_ != nullptr && data_ != nullptr) pool_->Return(data_, capacity_);
  pool_ = nullptr;
  data_ = nullptr;
}

WorkspacePool::WorkspacePool(uint64_t budget_bytes) : budget_(budget_bytes) {}

WorkspacePool::~WorkspacePool() {
  absl::MutexLock lock(&mu_);
  for (const FreeBuffer& buffer : free_) Unmap(buffer.data, buffer.capacity);
}

absl::StatusOr<WorkspaceLease> WorkspacePool::Acquire(uint64_t bytes) {
  const size_t want = RoundUp(bytes);
  std::byte* data = nullptr;
  size_t capacity = 0;
  std::vector<FreeBuffer> evicted;
  {
    absl::MutexLock lock(&mu_);
    if (budget_ != 0 && in_use_ + want > budget_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "workspace of ", want, " bytes does not fit the memory budget: ",
          in_use_, " of ", budget_, " bytes in use"));
    }
    // Best fit among free buffers that keep the leased total in budget.
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      const bool fits = it->capacity >= want &&
                        (budget_ == 0 || in_use_ + it->capacity <= budget_);
      if (fits && (best == free_.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != free_.end()) {
      data = best->data;
      capacity = best->capacity;
      free_.erase(best);
    } else {
      capacity = want;
      reserved_ += want;
      peak_in_use_ = std::max(peak_in_use_, in_use_ + want);
      // Keep the memory held (leased + free) within the budget and within
      // the most ever leased at once: release free buffers, largest first,
      // until the new one fits. (A free buffer too small for this lease
      // would otherwise stay beside it, and requests of growing sizes would
      // hold the sum of their workspaces instead of the largest.)
      const uint64_t cap =
          budget_ == 0 ? peak_in_use_ : std::min(budget_, peak_in_use_);
      while (reserved_ > cap && !free_.empty()) {
        auto largest =
            std::max_element(free_.begin(), free_.end(),
                             [](const FreeBuffer& a, const FreeBuffer& b) {
                               return a.capacity < b.capacity;
                             });
        evicted.push_back(*largest);
        reserved_ -= largest->capacity;
        free_.erase(largest);
      }
    }
    in_use_ += capacity;
  }
  for (const FreeBuffer& buffer : evicted) Unmap(buffer.data, buffer.capacity);
  if (data == nullptr) {
    data = Map(capacity);
    if (data == nullptr) {
      absl::MutexLock lock(&mu_);
      in_use_ -= capacity;
      reserved_ -= capacity;
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate a workspace of ", capacity, " bytes"));
    }
  }
  return WorkspaceLease(this, data, static_cast<size_t>(bytes), capacity);
}

void WorkspacePool::Return(std::byte* data, size_t capacity) {
  absl::MutexLock lock(&mu_);
  in_use_ -= capacity;
  free_.push_back(FreeBuffer{data, capacity});
}

uint64_t WorkspacePool::in_use_bytes() const {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

uint64_t WorkspacePool::reserved_bytes() const {
  absl::MutexLock lock(&mu_);
  return reserved_;
}

}  // namespace attnserve::core
