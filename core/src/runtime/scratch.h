// Carves a leased workspace into aligned typed regions, once per call, so
// that the hot loops never allocate. The same carving code sizes the
// workspace: a Scratch made without memory only counts, so a kernel's
// layout function is both its size (for the plan) and its carving (for the
// run), written once.
//
//   Scratch counter;                       // Sizing: no memory.
//   CarveMine(dims, counter);
//   uint64_t bytes = counter.used_bytes();
//
//   Scratch arena(lease.data(), lease.size());
//   Mine m = CarveMine(dims, arena);
//   ATTN_RETURN_IF_ERROR(arena.status());  // Workspace too small: INTERNAL.
//
// The bounds check is a real check in every build: a region that does not
// fit is not handed out (the pointer is null) and status() reports it, so a
// kernel refuses to run instead of writing past its workspace.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnserve::core {

class Scratch {
 public:
  // Every region starts on a cache line.
  static constexpr size_t kAlignment = 64;

  // Counting only: Take() returns null and used_bytes() grows.
  Scratch() = default;
  // Carving `bytes` bytes at `base` (kAlignment-aligned).
  Scratch(void* base, size_t bytes)
      : base_(static_cast<std::byte*>(base)),
        capacity_(bytes),
        counting_(false) {}

  // `n` elements of T, kAlignment-aligned; null when counting or when the
  // region does not fit (then status() is INTERNAL).
  template <typename T>
  T* Take(int64_t n) {
    const size_t offset = used_;
    const size_t bytes = n > 0 ? static_cast<size_t>(n) * sizeof(T) : 0;
    used_ += (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (counting_) return nullptr;
    if (used_ > capacity_) {
      overflow_ = true;
      return nullptr;
    }
    return reinterpret_cast<T*>(base_ + offset);
  }
  float* TakeFloats(int64_t n) { return Take<float>(n); }

  // Bytes handed out (or counted) so far, whole cache lines.
  size_t used_bytes() const { return used_; }

  // INTERNAL when a region did not fit.
  absl::Status status() const;

 private:
  std::byte* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
  bool counting_ = true;
  bool overflow_ = false;
};

// Bytes of one worker's region as `carve` lays it out (counting Scratch).
template <typename Carve>
size_t ScratchBytes(Carve&& carve) {
  Scratch counter;
  carve(counter);
  return counter.used_bytes();
}

// Splits `bytes` at `base` into `slots` equal, aligned regions and carves
// each with `carve(Scratch&, T*)`; INTERNAL when a region overflows (the
// workspace is smaller than the plan that sized it said).
template <typename T, typename Carve>
absl::StatusOr<std::vector<T>> CarveSlots(void* base, size_t bytes, int slots,
                                          Carve&& carve) {
  std::vector<T> out(static_cast<size_t>(slots));
  const size_t per_slot = bytes / static_cast<size_t>(slots) /
                          Scratch::kAlignment * Scratch::kAlignment;
  for (int i = 0; i < slots; ++i) {
    Scratch arena(
        static_cast<std::byte*>(base) + per_slot * static_cast<size_t>(i),
        per_slot);
    carve(arena, &out[static_cast<size_t>(i)]);
    absl::Status status = arena.status();
    if (!status.ok()) return status;
  }
  return out;
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_SCRATCH_H_
