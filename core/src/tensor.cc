#include "attnserve/core/tensor.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::core {

absl::StatusOr<int64_t> CheckedNumElements(const std::vector<int64_t>& shape,
                                           const std::string& field) {
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t dim = shape[i];
    if (dim < 0) {
      return InvalidField(absl::StrCat(field, ".shape[", i, "]"),
                          absl::StrCat("dimension must be >= 0, got ", dim));
    }
    if (dim != 0 && n > std::numeric_limits<int64_t>::max() / dim) {
      return InvalidField(absl::StrCat(field, ".shape"),
                          "product of dimensions overflows int64");
    }
    n *= dim;
  }
  return n;
}

HostTensor MakeHostTensor(DType dtype, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = dtype;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.shape = std::move(shape);
  t.bytes.assign(static_cast<size_t>(n) * ItemSize(dtype), '\0');
  return t;
}

}  // namespace attnserve::core
