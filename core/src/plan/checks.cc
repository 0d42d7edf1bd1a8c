#include "plan/checks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::core {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckByteSize(const TensorView& t, const std::string& field) {
  if (t.chunks != nullptr) {
    // A caller's mistake, not a client's: the server joins these.
    return absl::InternalError(
        absl::StrCat(field, ".data: this tensor must be contiguous, got it in ",
                     t.chunks->chunks().size(), " chunks"));
  }
  return CheckRowTensorSize(t, field);
}

absl::Status CheckRowTensorSize(const TensorView& t, const std::string& field) {
  if (t.chunks != nullptr && t.chunks->size() != t.size_bytes) {
    return absl::InternalError(absl::StrCat(field, ".data: ", t.chunks->size(),
                                            " bytes in chunks but ",
                                            t.size_bytes, " in size_bytes"));
  }
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

double TensorBytes(std::initializer_list<const TensorView*> inputs,
                   const std::vector<OutputSpec>& outputs) {
  double total = static_cast<double>(OutputBytes(outputs));
  for (const TensorView* t : inputs) {
    if (t != nullptr) total += static_cast<double>(t->size_bytes);
  }
  return total;
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

absl::Status CheckScaleValue(double value) {
  if (!std::isfinite(value)) {
    return InvalidField("scale_value",
                        absl::StrCat("must be a finite number, got ", value));
  }
  if (std::fabs(value) > static_cast<double>(FLT_MAX)) {
    return InvalidField("scale_value",
                        absl::StrCat("is used as float32 and must be in [-",
                                     FLT_MAX, ", ", FLT_MAX, "], got ", value));
  }
  return absl::OkStatus();
}

namespace {

float FloatAt(const TensorView& t, int64_t i) {
  float x;
  std::memcpy(&x, static_cast<const unsigned char*>(t.data) + i * sizeof(float),
              sizeof(float));
  return x;
}

// The first element of `ranges` of a FLOAT32 tensor failing `ok`, or -1.
template <typename Pred>
int64_t FirstBadFloat(const TensorView& t,
                      const std::vector<ElementRange>& ranges, Pred ok) {
  const int64_t n = static_cast<int64_t>(t.size_bytes / sizeof(float));
  for (const ElementRange& r : ranges) {
    for (int64_t i = std::max<int64_t>(r.begin, 0); i < std::min(r.end, n);
         ++i) {
      if (!ok(FloatAt(t, i))) return i;
    }
  }
  return -1;
}

}  // namespace

absl::Status CheckSoftmaxStatistics(const TensorView& softmax_max,
                                    const TensorView& softmax_sum,
                                    const std::vector<ElementRange>& rows) {
  const int64_t bad_max = FirstBadFloat(
      softmax_max, rows, [](float x) { return std::isfinite(x); });
  if (bad_max >= 0) {
    return InvalidField(
        "softmax_max",
        absl::StrCat("must be finite (send the forward's softmax_max "
                     "unchanged, or none of the residuals); element ",
                     bad_max, " is ", FloatAt(softmax_max, bad_max)));
  }
  const int64_t bad_sum = FirstBadFloat(
      softmax_sum, rows, [](float x) { return x > 0.0f && std::isfinite(x); });
  if (bad_sum >= 0) {
    return InvalidField(
        "softmax_sum",
        absl::StrCat("must be positive and finite (send the forward's "
                     "softmax_sum unchanged, or none of the residuals); "
                     "element ",
                     bad_sum, " is ", FloatAt(softmax_sum, bad_sum)));
  }
  return absl::OkStatus();
}

}  // namespace attnserve::core
