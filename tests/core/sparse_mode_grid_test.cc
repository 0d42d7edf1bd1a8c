// sparse_mode 0-8 against the float64 reference in FLOAT16 and BFLOAT16,
// forward and backward (the FLOAT32 points are in sparse_mode_test).
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/core/sparse_mode_cases.h"

namespace attnserve::test {
namespace {

using sparse_cases::ModeCaseIndices;
using sparse_cases::ModeCases;
using sparse_cases::ModeParam;
using sparse_cases::ModeParamName;

class SparseModeGridTest : public ::testing::TestWithParam<ModeParam> {};

TEST_P(SparseModeGridTest, BothDirectionsMatchReference) {
  FeatureConfig config = ModeCases()[std::get<0>(GetParam())].config;
  config.dtype = std::get<1>(GetParam());
  CheckBothDirections(config);
}

INSTANTIATE_TEST_SUITE_P(
    HalfDTypes, SparseModeGridTest,
    ::testing::Combine(::testing::ValuesIn(ModeCaseIndices()),
                       ::testing::Values(core::DType::kFloat16,
                                         core::DType::kBFloat16)),
    ModeParamName);

}  // namespace
}  // namespace attnserve::test
