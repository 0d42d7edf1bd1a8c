// Tensors as the core sees them: non-owning views of wire bytes for inputs,
// owning byte buffers for outputs.
//
// A TensorView points into memory owned by the caller (e.g. a protobuf
// request), which must outlive every use of the view. HostTensor owns its
// bytes in a std::string so that the server can move them into a protobuf
// `bytes` field without copying.
#ifndef ATTNSERVE_CORE_TENSOR_H_
#define ATTNSERVE_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"

namespace attnserve::core {

// Row-major (C order), little-endian, contiguous.
struct TensorView {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  // Byte length of `data`; Plan checks it equals NumElements * ItemSize.
  size_t size_bytes = 0;

  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape.size()); }
};

struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::string bytes;

  TensorView view() const {
    return TensorView{dtype, shape, bytes.data(), bytes.size()};
  }
};

// Product of `shape`, or an error if a dimension is negative or the product
// overflows int64. `field` names the tensor in the error.
absl::StatusOr<int64_t> CheckedNumElements(const std::vector<int64_t>& shape,
                                           const std::string& field);

// Allocates a zero-filled tensor.
HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_TENSOR_H_
