#include "plan/checks.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::core {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckByteSize(const TensorView& t, const std::string& field) {
  ATTN_ASSIGN_OR_RETURN(const uint64_t want,
                        CheckedByteSize(t.dtype, t.shape, field));
  if (want != t.size_bytes) {
    return InvalidField(field + ".data",
                        absl::StrCat("has ", t.size_bytes, " bytes but shape ",
                                     ShapeString(t.shape), " of ",
                                     DTypeName(t.dtype), " needs ", want));
  }
  return absl::OkStatus();
}

absl::Status CheckRange(int64_t value, int64_t lo, int64_t hi,
                        const std::string& field, const std::string& what) {
  if (value < lo || value > hi) {
    return InvalidField(field, absl::StrCat(what, " must be in [", lo, ", ", hi,
                                            "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const TensorView& t, const std::vector<int64_t>& want,
                        const std::string& field) {
  if (t.shape != want) {
    return InvalidField(field + ".shape",
                        absl::StrCat("must be ", ShapeString(want), ", got ",
                                     ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckDType(const TensorView& t, DType want,
                        const std::string& field, const std::string& why) {
  if (t.dtype != want) {
    return InvalidField(field + ".dtype",
                        absl::StrCat("must be ", DTypeName(want), " (", why,
                                     "), got ", DTypeName(t.dtype)));
  }
  return absl::OkStatus();
}

}  // namespace attnserve::core
