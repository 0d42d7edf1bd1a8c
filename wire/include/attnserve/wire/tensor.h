// Sizes of attnserve.v1.Tensor messages, checked the same way everywhere:
// the server's conversion and limits, and the client's helpers.
//
//   ATTN_ASSIGN_OR_RETURN(int64_t n, wire::ElementCount(tensor, "key"));
//   ATTN_RETURN_IF_ERROR(wire::CheckData(tensor, "key"));
//   // INVALID_ARGUMENT "key.data: has 7 bytes, expected 8 = prod([4]) * 2
//   //   (BFLOAT16)"
//
// Errors are INVALID_ARGUMENT with the field path attached (core::FieldOf):
// "<field>.shape[i]" for a negative dimension, "<field>.shape" for a count
// that overflows int64, "<field>.dtype" for an unknown dtype and
// "<field>.data" for a data length that does not match. The arithmetic is
// the core's (core::CheckedNumElements / CheckedByteSize). All functions
// are pure and thread-safe; none allocates in proportion to the shape.
#ifndef ATTNSERVE_WIRE_TENSOR_H_
#define ATTNSERVE_WIRE_TENSOR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::wire {

// The dimensions of `tensor` (a view of its shape field).
inline absl::Span<const int64_t> Shape(const v1::Tensor& tensor) {
  return absl::Span<const int64_t>(tensor.shape().data(),
                                   static_cast<size_t>(tensor.shape_size()));
}

// The largest rank a request's tensor may have (no operator takes more;
// the server refuses more before reading the dimensions).
inline constexpr int kMaxRank = 8;

// "[2,128,8,64]" for log lines and messages; a shape of rank above kMaxRank
// shows its first kMaxRank dimensions and its rank.
std::string ShapeString(const v1::Tensor& tensor);

// prod(shape), dimensions checked for sign and the product for overflow.
absl::StatusOr<int64_t> ElementCount(const v1::Tensor& tensor,
                                     const std::string& field);

// prod(shape) * itemsize(dtype).
absl::StatusOr<uint64_t> ByteSize(const v1::Tensor& tensor,
                                  const std::string& field);

// OK when data.size() == ByteSize(tensor).
absl::Status CheckData(const v1::Tensor& tensor, const std::string& field);
// The same for `data_bytes` of data held elsewhere (a received payload).
absl::Status CheckDataSize(const v1::Tensor& tensor, uint64_t data_bytes,
                           const std::string& field);

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_TENSOR_H_
