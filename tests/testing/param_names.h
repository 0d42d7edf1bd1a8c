// Parameters and test names shared by the dtype-parameterized tests:
//
//   INSTANTIATE_TEST_SUITE_P(ComputeDTypes, MyTest, ComputeDTypes(),
//                            DTypeParamName);
#ifndef ATTNSERVE_TESTS_TESTING_PARAM_NAMES_H_
#define ATTNSERVE_TESTS_TESTING_PARAM_NAMES_H_

#include <string>

#include "attnserve/core/dtype.h"
#include "gtest/gtest.h"

namespace attnserve::test {

// The dtypes the kernels compute for: FLOAT32, FLOAT16, BFLOAT16.
inline auto ComputeDTypes() {
  return ::testing::Values(core::DType::kFloat32, core::DType::kFloat16,
                           core::DType::kBFloat16);
}

// "FLOAT16" for DType::kFloat16.
inline std::string DTypeParamName(
    const ::testing::TestParamInfo<core::DType>& info) {
  return std::string(core::DTypeName(info.param));
}

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_PARAM_NAMES_H_
