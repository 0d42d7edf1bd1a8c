#include "attnserve/core/tensor.h"

#include <atomic>
#include <limits>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/allocation_faults.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::core {

absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape,
                                           const std::string& field) {
  int64_t n = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t dim = shape[i];
    if (dim < 0) {
      return InvalidField(absl::StrCat(field, ".shape[", i, "]"),
                          absl::StrCat("dimension must be >= 0, got ", dim));
    }
    // Every dimension is checked for sign even after an overflow; a zero
    // dimension later on does not make an overflowed product valid.
    overflow = overflow || __builtin_mul_overflow(n, dim, &n);
  }
  if (overflow) {
    return InvalidField(
        absl::StrCat(field, ".shape"),
        absl::StrCat("product of dimensions [", absl::StrJoin(shape, ","),
                     "] overflows int64"));
  }
  return n;
}

absl::StatusOr<uint64_t> CheckedByteSize(DType dtype,
                                         absl::Span<const int64_t> shape,
                                         const std::string& field) {
  ATTN_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(shape, field));
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(ItemSize(dtype)),
                             &bytes)) {
    return InvalidField(
        absl::StrCat(field, ".shape"),
        absl::StrCat("byte size of [", absl::StrJoin(shape, ","), "] ",
                     DTypeName(dtype), " overflows int64"));
  }
  return static_cast<uint64_t>(bytes);
}

namespace {

// Allocations left until the armed one (0: disarmed).
std::atomic<int64_t> allocations_to_failure{0};
std::atomic<int64_t> allocation_count{0};

}  // namespace

void FailNthHostAllocation(int64_t n) {
  allocations_to_failure.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

int64_t HostAllocationCount() {
  return allocation_count.load(std::memory_order_relaxed);
}

void CountHostAllocation() {
  allocation_count.fetch_add(1, std::memory_order_relaxed);
  int64_t left = allocations_to_failure.load(std::memory_order_relaxed);
  while (left > 0) {
    if (allocations_to_failure.compare_exchange_weak(
            left, left - 1, std::memory_order_relaxed)) {
      if (left == 1) throw std::bad_alloc();
      return;
    }
  }
}

HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape) {
  return MakeHostTensor(dtype, std::move(shape), nullptr);
}

namespace {

// Counts a host tensor's allocation (where FailNthHostAllocation throws)
// and returns the tensor with its dtype and shape but no bytes yet; `bytes`
// gets their count.
HostTensor CountedHostTensor(DType dtype, std::vector<int64_t> shape,
                             size_t* bytes) {
  CountHostAllocation();
  HostTensor t;
  t.dtype = dtype;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.shape = std::move(shape);
  *bytes = static_cast<size_t>(n) * ItemSize(dtype);
  return t;
}

}  // namespace

HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape,
                          BufferPool* pool) {
  size_t bytes = 0;
  HostTensor t = CountedHostTensor(dtype, std::move(shape), &bytes);
  t.bytes = pool == nullptr ? Buffer(bytes) : pool->AcquireZeroed(bytes);
  return t;
}

HostTensor MakeUninitializedHostTensor(DType dtype, std::vector<int64_t> shape,
                                       BufferPool* pool) {
  size_t bytes = 0;
  HostTensor t = CountedHostTensor(dtype, std::move(shape), &bytes);
  t.bytes = pool->Acquire(bytes);
  return t;
}

}  // namespace attnserve::core
