// Small validation helpers shared by the Plan functions. Each returns
// INVALID_ARGUMENT naming the field on failure.
#ifndef ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_
#define ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"

namespace attnserve::core {

// "[2, 3, 4]".
std::string ShapeString(const std::vector<int64_t>& shape);

// data byte length equals prod(shape) * itemsize, with overflow checks, for
// a contiguous tensor: INTERNAL for a chunked one (params.h says which
// tensors may be chunked).
absl::Status CheckByteSize(const TensorView& t, const std::string& field);
// The same for a tensor the kernels read row by row (head_io.h), which may
// be contiguous or chunked.
absl::Status CheckRowTensorSize(const TensorView& t, const std::string& field);

// The bytes a call's tensors hold, what ThreadPolicy's bytes_per_thread
// counts: `inputs` (null entries skipped) and `outputs`.
double TensorBytes(std::initializer_list<const TensorView*> inputs,
                   const std::vector<OutputSpec>& outputs);

// lo <= value <= hi, the field and the documented range named on failure.
absl::Status CheckRange(int64_t value, int64_t lo, int64_t hi,
                        const std::string& field, const std::string& what);

// Exact shape match.
absl::Status CheckShape(const TensorView& t, const std::vector<int64_t>& want,
                        const std::string& field);

// Exact dtype match.
absl::Status CheckDType(const TensorView& t, DType want,
                        const std::string& field, const std::string& why);

// scale_value: finite and representable as float32 (|value| <= FLT_MAX),
// since the kernels scale in float32.
absl::Status CheckScaleValue(double value);

// Elements [begin, end) of a tensor.
struct ElementRange {
  int64_t begin = 0;
  int64_t end = 0;
};

// softmax_max / softmax_sum sent as residuals (FLOAT32, byte size already
// checked): in the `rows` the backward reads, every max finite and every sum
// positive and finite. Sums are divisors and maxima are subtracted from
// scores, so anything else turns into inf/NaN gradients. Fully masked rows
// carry -FLT_MAX / +FLT_MAX, which pass; rows of a TND batch without keys
// are never read, and the caller leaves them out of `rows`.
absl::Status CheckSoftmaxStatistics(const TensorView& softmax_max,
                                    const TensorView& softmax_sum,
                                    const std::vector<ElementRange>& rows);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_
