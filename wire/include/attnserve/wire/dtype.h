// attnserve.v1.DataType and the core's DType: the one table between them.
//
//   ATTN_ASSIGN_OR_RETURN(core::DType dtype,
//                         wire::ToCoreDType(tensor.dtype(), "query.dtype"));
//   v1::DataType back = wire::ToWireDType(dtype);      // DATA_TYPE_FLOAT16
//   std::string name = wire::DataTypeName(back);       // "FLOAT16"
//
// core::DType mirrors v1::DataType minus UNSPECIFIED (checked at compile
// time), so names and item sizes come from the core's own table. All
// functions are pure and thread-safe.
#ifndef ATTNSERVE_WIRE_DTYPE_H_
#define ATTNSERVE_WIRE_DTYPE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::wire {

// The core dtype of a wire dtype value; INVALID_ARGUMENT naming `field` for
// DATA_TYPE_UNSPECIFIED ("must be set") or a value outside the enum.
absl::StatusOr<core::DType> ToCoreDType(int wire_dtype,
                                        const std::string& field);

// The wire dtype of a core dtype (never UNSPECIFIED).
v1::DataType ToWireDType(core::DType dtype);

// The enum name without its prefix ("BFLOAT16", "UNSPECIFIED"), or "?<n>"
// for a value outside the enum.
std::string DataTypeName(int wire_dtype);

// Bytes per element; INVALID_ARGUMENT for UNSPECIFIED or an unknown value.
absl::StatusOr<size_t> ItemSize(int wire_dtype);

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_DTYPE_H_
