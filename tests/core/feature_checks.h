// Shared by the feature tests (varlen, sparse modes, pse, dropout, FLOAT8):
// run one FeatureCase through the kernels and compare with the reference,
// and match refusals by the field they name.
//
//   CheckBothDirections(config);                       // forward + backward
//   EXPECT_TRUE(IsInvalidOn(PlanForward(args).status(), "atten_mask"));
#ifndef ATTNSERVE_TESTS_CORE_FEATURE_CHECKS_H_
#define ATTNSERVE_TESTS_CORE_FEATURE_CHECKS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {

// INVALID_ARGUMENT whose field path starts with `prefix` (e.g.
// "atten_mask" matches "atten_mask.shape").
inline ::testing::AssertionResult IsInvalidOn(const absl::Status& status,
                                              const std::string& prefix) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure()
           << "expected INVALID_ARGUMENT on " << prefix << ", got " << status;
  }
  const std::optional<std::string> field = core::FieldOf(status);
  if (!field.has_value() || field->rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "expected a field starting with \"" << prefix << "\", got "
           << (field.has_value() ? "\"" + *field + "\"" : "no field") << " in "
           << status;
  }
  return ::testing::AssertionSuccess();
}

// Forward against the reference, then the backward with `residuals`
// (kKernelForward: the forward just run) against the reference.
inline void CheckBothDirections(const FeatureConfig& config,
                                Residuals residuals = Residuals::kKernelForward,
                                int threads = 1) {
  SCOPED_TRACE(FeatureCaseName(config));
  FeatureCase c(config);
  const Tolerances tol = FeatureTolerances(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args(), threads));
  ExpectForwardMatches(c, fwd, tol);
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardResult grad,
      RunBackward(c.backward_args_for(residuals, &fwd), threads));
  ExpectBackwardMatches(c, grad, tol, residuals);
}

// The backward alone (kReference or kRecomputed residuals).
inline void CheckBackward(const FeatureConfig& config, Residuals residuals,
                          int threads = 1) {
  SCOPED_TRACE(FeatureCaseName(config));
  FeatureCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardResult grad,
      RunBackward(c.backward_args_for(residuals, nullptr), threads));
  ExpectBackwardMatches(c, grad, FeatureTolerances(config), residuals);
}

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_CORE_FEATURE_CHECKS_H_
