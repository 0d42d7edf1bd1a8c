#include "attnserve/wire/dtype.h"

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::wire {
namespace {

// core::DType k is wire value k + 1: the whole table, checked here.
constexpr int ToWire(core::DType dtype) { return static_cast<int>(dtype) + 1; }
static_assert(ToWire(core::DType::kFloat32) == v1::DATA_TYPE_FLOAT32);
static_assert(ToWire(core::DType::kFloat16) == v1::DATA_TYPE_FLOAT16);
static_assert(ToWire(core::DType::kBFloat16) == v1::DATA_TYPE_BFLOAT16);
static_assert(ToWire(core::DType::kFloat8E4M3FN) ==
              v1::DATA_TYPE_FLOAT8_E4M3FN);
static_assert(ToWire(core::DType::kFloat8E5M2) == v1::DATA_TYPE_FLOAT8_E5M2);
static_assert(ToWire(core::DType::kUInt8) == v1::DATA_TYPE_UINT8);
static_assert(ToWire(core::DType::kBool) == v1::DATA_TYPE_BOOL);
static_assert(ToWire(core::DType::kInt32) == v1::DATA_TYPE_INT32);
static_assert(ToWire(core::DType::kInt64) == v1::DATA_TYPE_INT64);
static_assert(v1::DataType_MAX == v1::DATA_TYPE_INT64,
              "a new wire dtype needs a core::DType");

}  // namespace

absl::StatusOr<core::DType> ToCoreDType(int wire_dtype,
                                        const std::string& field) {
  if (wire_dtype == v1::DATA_TYPE_UNSPECIFIED) {
    return core::InvalidField(field, "must be set (got DATA_TYPE_UNSPECIFIED)");
  }
  if (!v1::DataType_IsValid(wire_dtype)) {
    return core::InvalidField(
        field, absl::StrCat("unknown DataType value ", wire_dtype));
  }
  return static_cast<core::DType>(wire_dtype - 1);
}

v1::DataType ToWireDType(core::DType dtype) {
  return static_cast<v1::DataType>(ToWire(dtype));
}

std::string DataTypeName(int wire_dtype) {
  if (wire_dtype == v1::DATA_TYPE_UNSPECIFIED) return "UNSPECIFIED";
  if (!v1::DataType_IsValid(wire_dtype)) return absl::StrCat("?", wire_dtype);
  return core::DTypeName(static_cast<core::DType>(wire_dtype - 1));
}

absl::StatusOr<size_t> ItemSize(int wire_dtype) {
  ATTN_ASSIGN_OR_RETURN(const core::DType dtype,
                        ToCoreDType(wire_dtype, "dtype"));
  return core::ItemSize(dtype);
}

}  // namespace attnserve::wire
