#include "attnserve/wire/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/core/tensor.h"
#include "attnserve/wire/dtype.h"

namespace attnserve::wire {

std::string ShapeString(const v1::Tensor& tensor) {
  if (tensor.shape_size() <= kMaxRank) {
    return absl::StrCat("[", absl::StrJoin(tensor.shape(), ","), "]");
  }
  return absl::StrCat("[",
                      absl::StrJoin(tensor.shape().begin(),
                                    tensor.shape().begin() + kMaxRank, ","),
                      ",...] (rank ", tensor.shape_size(), ")");
}

absl::StatusOr<int64_t> ElementCount(const v1::Tensor& tensor,
                                     const std::string& field) {
  return core::CheckedNumElements(Shape(tensor), field);
}

absl::StatusOr<uint64_t> ByteSize(const v1::Tensor& tensor,
                                  const std::string& field) {
  ATTN_ASSIGN_OR_RETURN(const core::DType dtype,
                        ToCoreDType(tensor.dtype(), field + ".dtype"));
  return core::CheckedByteSize(dtype, Shape(tensor), field);
}

absl::Status CheckData(const v1::Tensor& tensor, const std::string& field) {
  return CheckDataSize(tensor, tensor.data().size(), field);
}

absl::Status CheckDataSize(const v1::Tensor& tensor, uint64_t data_bytes,
                           const std::string& field) {
  ATTN_ASSIGN_OR_RETURN(const uint64_t want, ByteSize(tensor, field));
  if (data_bytes == want) return absl::OkStatus();
  return core::InvalidField(
      field + ".data",
      absl::StrCat("has ", data_bytes, " bytes, expected ", want, " = prod(",
                   ShapeString(tensor), ") * ", *ItemSize(tensor.dtype()), " (",
                   DataTypeName(tensor.dtype()), ")"));
}

}  // namespace attnserve::wire
