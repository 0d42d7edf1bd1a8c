// Small validation helpers shared by the Plan functions. Each returns
// INVALID_ARGUMENT naming the field on failure.
#ifndef ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_
#define ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/tensor.h"

namespace attnserve::core {

// "[2, 3, 4]".
std::string ShapeString(const std::vector<int64_t>& shape);

// data byte length equals prod(shape) * itemsize, with overflow checks.
absl::Status CheckByteSize(const TensorView& t, const std::string& field);

// lo <= value <= hi, the field and the documented range named on failure.
absl::Status CheckRange(int64_t value, int64_t lo, int64_t hi,
                        const std::string& field, const std::string& what);

// Exact shape match.
absl::Status CheckShape(const TensorView& t, const std::vector<int64_t>& want,
                        const std::string& field);

// Exact dtype match.
absl::Status CheckDType(const TensorView& t, DType want,
                        const std::string& field, const std::string& why);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_PLAN_CHECKS_H_
