// Tensors as the core sees them: non-owning views of wire bytes for inputs,
// owning byte buffers for outputs.
//
// A TensorView points into memory owned by the caller (e.g. a request's
// received bytes), which must outlive every use of the view. HostTensor owns
// its bytes in a Buffer (buffer.h), which the server sends from, and may
// share (e.g. with tensors kept on the server), without copying.
#ifndef ATTNSERVE_CORE_TENSOR_H_
#define ATTNSERVE_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnserve/core/buffer.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/chunked_bytes.h"
#include "attnserve/core/dtype.h"

namespace attnserve::core {

// Row-major (C order), little-endian; contiguous at `data`, or, where an
// operator's arguments say so (params.h), in `chunks`.
struct TensorView {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  // Byte length of the tensor; Plan checks it equals NumElements * ItemSize.
  size_t size_bytes = 0;
  // When set, the tensor's bytes are these chunks (as received, unjoined)
  // and `data` is null; size_bytes == chunks->size(). Only the tensors the
  // kernels read row by row accept chunks; Plan refuses them elsewhere.
  const ChunkedBytes* chunks = nullptr;

  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape.size()); }
};

struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  Buffer bytes;

  TensorView view() const {
    return TensorView{dtype, shape, bytes.data(), bytes.size()};
  }
};

// The size arithmetic of every layer (core checks, wire conversion, request
// limits, client helpers) is these two functions.
//
// Product of `shape`, or INVALID_ARGUMENT if a dimension is negative
// ("<field>.shape[i]: dimension must be >= 0, got -1") or the product
// overflows int64 ("<field>.shape: ..."). `field` names the tensor.
absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape,
                                           const std::string& field);
// prod(shape) * ItemSize(dtype) in bytes, with the same errors; a byte size
// beyond int64 is "<field>.shape: byte size of [..] overflows".
absl::StatusOr<uint64_t> CheckedByteSize(DType dtype,
                                         absl::Span<const int64_t> shape,
                                         const std::string& field);

// Allocates a zero-filled tensor on the heap.
HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape);
// The same from `pool` (zero-filled).
HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape,
                          BufferPool* pool);
// The same with unspecified contents, for outputs the kernels write in full.
HostTensor MakeUninitializedHostTensor(DType dtype, std::vector<int64_t> shape,
                                       BufferPool* pool);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_TENSOR_H_
