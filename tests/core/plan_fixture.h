// Shared by the plan tests: a fixture that builds valid small requests in
// any padded layout (B=2, N1=4, N2=2, S1=5, S2=7, D=8) with zero-filled
// tensors it keeps alive, and assertions on the status a plan returns.
#ifndef ATTNSERVE_TESTS_CORE_PLAN_FIXTURE_H_
#define ATTNSERVE_TESTS_CORE_PLAN_FIXTURE_H_

#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/core/tensor.h"
#include "gtest/gtest.h"
#include "tests/testing/tensors.h"

namespace attnserve::core::plan_testing {

using ::attnserve::test::Bnsd;
using ::attnserve::test::LayoutShape;

inline constexpr int64_t kB = 2, kN1 = 4, kN2 = 2, kS1 = 5, kS2 = 7, kD = 8;

// INVALID_ARGUMENT whose FieldOf() contains `field`.
inline ::testing::AssertionResult IsInvalidField(const absl::Status& status,
                                                 const std::string& field) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected INVALID_ARGUMENT naming "
                                         << field << ", got " << status;
  }
  const std::optional<std::string> got = FieldOf(status);
  if (!got.has_value() || got->find(field) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "expected field containing \"" << field << "\", got "
           << (got.has_value() ? "\"" + *got + "\"" : "no field") << " in "
           << status;
  }
  return ::testing::AssertionSuccess();
}

// UNIMPLEMENTED naming `option` in its message or field.
inline ::testing::AssertionResult IsUnimplemented(const absl::Status& status,
                                                  const std::string& option) {
  if (status.code() != absl::StatusCode::kUnimplemented) {
    return ::testing::AssertionFailure()
           << "expected UNIMPLEMENTED naming " << option << ", got " << status;
  }
  const std::optional<std::string> field = FieldOf(status);
  const bool in_field =
      field.has_value() && field->find(option) != std::string::npos;
  if (!in_field && status.message().find(option) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "UNIMPLEMENTED does not name " << option << ": " << status;
  }
  return ::testing::AssertionSuccess();
}

class PlanTest : public ::testing::Test {
 protected:
  // A zero-filled tensor kept alive by the fixture.
  TensorView Tensor(DType dtype, std::vector<int64_t> shape) {
    storage_.push_back(MakeHostTensor(dtype, std::move(shape)));
    return storage_.back().view();
  }
  // FLOAT32 of `shape` filled with 1: softmax_sum residuals that pass the
  // statistics check (sums must be positive and finite).
  TensorView PositiveSums(std::vector<int64_t> shape) {
    storage_.push_back(MakeHostTensor(DType::kFloat32, std::move(shape)));
    auto& bytes = storage_.back().bytes;
    const float one = 1.0f;
    for (size_t i = 0; i + sizeof(one) <= bytes.size(); i += sizeof(one)) {
      std::memcpy(&bytes[i], &one, sizeof(one));
    }
    return storage_.back().view();
  }
  TensorView Qkv(Layout layout, int64_t n, int64_t s, int64_t d,
                 DType dtype = DType::kFloat32) {
    return Tensor(dtype, LayoutShape(layout, Bnsd{kB, n, s, d}));
  }

  // B=2, N1=4, N2=2 (GQA), S1=5, S2=7, D=Dv=8.
  ForwardArgs ValidForward(Layout layout = Layout::kBNSD) {
    ForwardArgs args;
    args.query = Qkv(layout, kN1, kS1, kD);
    args.key = Qkv(layout, kN2, kS2, kD);
    args.value = Qkv(layout, kN2, kS2, kD);
    args.options.head_num = kN1;
    args.options.input_layout = std::string(LayoutName(layout));
    args.options.scale_value = 0.25;
    return args;
  }
  BackwardArgs ValidBackward(Layout layout = Layout::kBNSD,
                             bool residuals = true) {
    const ForwardArgs f = ValidForward(layout);
    BackwardArgs args;
    args.query = f.query;
    args.key = f.key;
    args.value = f.value;
    args.options = f.options;
    args.dy = Qkv(layout, kN1, kS1, kD);
    if (residuals) {
      args.softmax_max = Tensor(DType::kFloat32, {kB, kN1, kS1, 8});
      args.softmax_sum = PositiveSums({kB, kN1, kS1, 8});
      args.attention_in = Qkv(layout, kN1, kS1, kD);
    }
    return args;
  }

  std::deque<HostTensor> storage_;
};

}  // namespace attnserve::core::plan_testing

#endif  // ATTNSERVE_TESTS_CORE_PLAN_FIXTURE_H_
