// Constraints of the FlashAttentionScore / ScoreGrad(V2) documents that hold
// for every request: layouts, ranks, the B/N/S/D ranges, heads, dtype
// consistency (FLOAT8 included), the grad's dy and residual tensors, and the
// scalar options. Each test starts from a valid request (asserted to plan),
// breaks one rule and expects INVALID_ARGUMENT on the field the conventions
// name. Varlen, sparse-mode, pse and dropout rules have their own files.
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/plan_feature_fixture.h"

namespace attnserve::core {
namespace {

using ::attnserve::core::plan_testing::FeaturePlanTest;
using ::attnserve::core::plan_testing::kB;
using ::attnserve::core::plan_testing::kD;
using ::attnserve::core::plan_testing::kN1;
using ::attnserve::core::plan_testing::kN2;
using ::attnserve::core::plan_testing::kS1;
using ::attnserve::core::plan_testing::kS2;
using ::attnserve::core::plan_testing::PaddedDims;
using ::attnserve::core::plan_testing::PlansBoth;
using ::attnserve::core::plan_testing::RejectsBackward;
using ::attnserve::core::plan_testing::RejectsBoth;
using ::attnserve::core::plan_testing::RejectsForward;
using ::attnserve::core::plan_testing::SetDy;

class PlanRejectFeatureTest : public FeaturePlanTest {};

constexpr int64_t kMaxBatch = 2 * 1024 * 1024;
constexpr int64_t kMaxSeq = 1024 * 1024;

// ----------------------------------------------------------------------------
// Layout and ranks.

TEST_F(PlanRejectFeatureTest, RejectsUnknownInputLayout) {
  const PaddedDims dims;
  for (const char* layout : {"", "NSBD", "bnsd", "TNDX"}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.input_layout = layout; },
                            {"input_layout"}))
        << "\"" << layout << "\"";
  }
}

TEST_F(PlanRejectFeatureTest, RejectsTensorRankNotMatchingLayout) {
  PaddedDims dims;
  dims.layout = Layout::kBSND;
  // Key in BSH form while the layout says BSND.
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims),
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat32, {kB, kS2, kN2 * kD});
                  },
                  {"key.shape"}));
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims),
                  [&](auto& a) {
                    a.value = Tensor(DType::kFloat32, {kB, kS2, kN2 * kD});
                  },
                  {"value.shape"}));
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) { a.options.input_layout = "BSH"; },
                          {"query.shape"}));
  EXPECT_TRUE(
      RejectsBackward(PaddedGrad(dims),
                      [&](BackwardArgs& a) {
                        a.dy = Tensor(DType::kFloat32, {kB, kS1, kN1 * kD});
                      },
                      {"dy.shape"}));
}

// ----------------------------------------------------------------------------
// Documented ranges: B 1..2M, N 1..256, S 1..1M, D 1..512 (padded).

TEST_F(PlanRejectFeatureTest, RejectsBatchOutsideOneTo2M) {
  PaddedDims dims;
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                  [&](auto& a) {
                    a.query = Tensor(DType::kFloat32, {0, kN1, kS1, kD});
                    a.key = Tensor(DType::kFloat32, {0, kN2, kS2, kD});
                    a.value = Tensor(DType::kFloat32, {0, kN2, kS2, kD});
                    SetDy(a, Tensor(DType::kFloat32, {0, kN1, kS1, kD}));
                  },
                  {"query.shape[0]"}));
  // B = 2M + 1 with one head, one position and D = 1 (FLOAT16, 4 MiB each).
  dims.n1 = dims.n2 = dims.sq = dims.skv = dims.d = dims.dv = 1;
  dims.dtype = DType::kFloat16;
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                  [&](auto& a) {
                    const std::vector<int64_t> shape = {kMaxBatch + 1, 1, 1, 1};
                    a.query = Tensor(DType::kFloat16, shape);
                    a.key = Tensor(DType::kFloat16, shape);
                    a.value = Tensor(DType::kFloat16, shape);
                    SetDy(a, Tensor(DType::kFloat16, shape));
                  },
                  {"query.shape[0]"}));
}

TEST_F(PlanRejectFeatureTest, RejectsHeadNumAbove256) {
  PaddedDims dims;
  dims.n1 = 256;
  dims.n2 = 1;
  dims.sq = dims.skv = dims.d = dims.dv = 1;
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                          [&](auto& a) {
                            a.query = Tensor(DType::kFloat32, {kB, 257, 1, 1});
                            a.options.head_num = 257;
                            SetDy(a, Tensor(DType::kFloat32, {kB, 257, 1, 1}));
                          },
                          {"head_num", "query.shape[1]"}));
}

TEST_F(PlanRejectFeatureTest, RejectsQuerySequenceOutsideOneTo1M) {
  PaddedDims dims;
  dims.b = dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  dims.dtype = DType::kFloat16;
  for (int64_t sq : {int64_t{0}, kMaxSeq + 1}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                            [&](auto& a) {
                              a.query = Tensor(DType::kFloat16, {1, 1, sq, 1});
                              SetDy(a, Tensor(DType::kFloat16, {1, 1, sq, 1}));
                            },
                            {"query.shape[2]"}))
        << sq;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsKeySequenceOutsideOneTo1M) {
  PaddedDims dims;
  dims.b = dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  dims.dtype = DType::kFloat16;
  for (int64_t skv : {int64_t{0}, kMaxSeq + 1}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                            [&](auto& a) {
                              a.key = Tensor(DType::kFloat16, {1, 1, skv, 1});
                              a.value = Tensor(DType::kFloat16, {1, 1, skv, 1});
                            },
                            {"key.shape[2]"}))
        << skv;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsHeadDimAbove512) {
  PaddedDims dims;
  dims.d = dims.dv = 512;
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                  [&](auto& a) {
                    a.query = Tensor(DType::kFloat32, {kB, kN1, kS1, 513});
                    a.key = Tensor(DType::kFloat32, {kB, kN2, kS2, 513});
                  },
                  {"query.shape[3]"}));
}

TEST_F(PlanRejectFeatureTest, RejectsValueHeadDimOutsideOneTo512) {
  PaddedDims dims;
  dims.dv = 4;  // Dv < D is accepted.
  for (int64_t dv : {0, 513}) {
    EXPECT_TRUE(
        RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                    [&](auto& a) {
                      a.value = Tensor(DType::kFloat32, {kB, kN2, kS2, dv});
                      SetDy(a, Tensor(DType::kFloat32, {kB, kN1, kS1, dv}));
                    },
                    {"value.shape[3]"}))
        << dv;
  }
}

// ----------------------------------------------------------------------------
// Heads.

TEST_F(PlanRejectFeatureTest, RejectsHeadNumDifferentFromQueryHeads) {
  const PaddedDims dims;
  for (int64_t head_num : {0, 2, 8}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.head_num = head_num; },
                            {"head_num"}))
        << head_num;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsHeadNumNotDividingHiddenSize) {
  PaddedDims dims;
  dims.layout = Layout::kSBH;
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) { a.options.head_num = 3; },
                          {"head_num"}));
}

TEST_F(PlanRejectFeatureTest, RejectsQueryHeadsNotMultipleOfKeyHeads) {
  PaddedDims dims;
  dims.n1 = 6;
  dims.n2 = 3;
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) {
                            a.key = Tensor(DType::kFloat32, {kB, 4, kS2, kD});
                            a.value = Tensor(DType::kFloat32, {kB, 4, kS2, kD});
                          },
                          {"key.shape[1]"}));
}

// ----------------------------------------------------------------------------
// Shapes that must agree.

TEST_F(PlanRejectFeatureTest, RejectsKeyBatchDifferentFromQuery) {
  const PaddedDims dims;
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims),
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat32, {kB + 1, kN2, kS2, kD});
                    a.value = Tensor(DType::kFloat32, {kB + 1, kN2, kS2, kD});
                  },
                  {"key.shape[0]"}));
}

TEST_F(PlanRejectFeatureTest, RejectsKeyHeadDimDifferentFromQuery) {
  const PaddedDims dims;
  EXPECT_TRUE(
      RejectsBoth(Padded(dims), PaddedGrad(dims),
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat32, {kB, kN2, kS2, kD + 1});
                  },
                  {"key.shape[3]"}));
}

TEST_F(PlanRejectFeatureTest, RejectsValueShapeDifferentFromKeyExceptD) {
  const PaddedDims dims;
  const std::vector<std::pair<std::vector<int64_t>, std::string>> bad = {
      {{kB - 1, kN2, kS2, kD}, "value.shape[0]"},
      {{kB, kN2 - 1, kS2, kD}, "value.shape[1]"},
      {{kB, kN2, kS2 + 1, kD}, "value.shape[2]"},
  };
  for (const auto& [shape, field] : bad) {
    EXPECT_TRUE(RejectsBoth(
        Padded(dims), PaddedGrad(dims),
        [&](auto& a) { a.value = Tensor(DType::kFloat32, shape); }, {field}))
        << field;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsDyShapeDifferentFromQueryWithDv) {
  PaddedDims dims;
  dims.layout = Layout::kBSND;
  dims.dv = 6;  // dy is [B,Sq,N1,Dv].
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kB, kS1, kN1, kD},
                                         {kB + 1, kS1, kN1, 6},
                                         {kB, kS1 + 1, kN1, 6},
                                         {kB, kS1, kN2, 6}}) {
    EXPECT_TRUE(RejectsBackward(
        PaddedGrad(dims),
        [&](BackwardArgs& a) { a.dy = Tensor(DType::kFloat32, shape); },
        {"dy.shape"}))
        << ::testing::PrintToString(shape);
  }
}

// ----------------------------------------------------------------------------
// Dtypes.

TEST_F(PlanRejectFeatureTest, RejectsKeyOrValueDtypeDifferentFromQuery) {
  PaddedDims dims;
  dims.dtype = DType::kFloat16;
  EXPECT_TRUE(RejectsBoth(
      Padded(dims), PaddedGrad(dims),
      [&](auto& a) { a.key = Tensor(DType::kBFloat16, a.key.shape); },
      {"key.dtype"}));
  EXPECT_TRUE(RejectsBoth(
      Padded(dims), PaddedGrad(dims),
      [&](auto& a) { a.value = Tensor(DType::kFloat32, a.value.shape); },
      {"value.dtype"}));
}

TEST_F(PlanRejectFeatureTest, RejectsDyOrAttentionInDtypeDifferentFromQuery) {
  PaddedDims dims;
  dims.dtype = DType::kBFloat16;
  EXPECT_TRUE(RejectsBackward(
      PaddedGrad(dims),
      [&](BackwardArgs& a) { a.dy = Tensor(DType::kFloat16, a.dy.shape); },
      {"dy.dtype"}));
  EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                              [&](BackwardArgs& a) {
                                a.attention_in = Tensor(DType::kFloat32,
                                                        a.attention_in->shape);
                              },
                              {"attention_in.dtype"}));
}

TEST_F(PlanRejectFeatureTest, RejectsQueryDtypeOutsideTheFloatTypes) {
  const PaddedDims dims;
  for (DType dtype : {DType::kInt32, DType::kUInt8, DType::kBool}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims, false),
                            [&](auto& a) {
                              a.query = Tensor(dtype, a.query.shape);
                              a.key = Tensor(dtype, a.key.shape);
                              a.value = Tensor(dtype, a.value.shape);
                              SetDy(a, Tensor(dtype, {kB, kN1, kS1, kD}));
                            },
                            {"query.dtype"}))
        << DTypeName(dtype);
  }
}

TEST_F(PlanRejectFeatureTest, RejectsFloat8InTheForward) {
  const PaddedDims dims;
  for (DType dtype : {DType::kFloat8E4M3FN, DType::kFloat8E5M2}) {
    EXPECT_TRUE(RejectsForward(Padded(dims),
                               [&](ForwardArgs& a) {
                                 a.query = Tensor(dtype, a.query.shape);
                                 a.key = Tensor(dtype, a.key.shape);
                                 a.value = Tensor(dtype, a.value.shape);
                               },
                               {"query.dtype"}))
        << DTypeName(dtype);
  }
}

TEST_F(PlanRejectFeatureTest, RejectsFloat8GradInputsOfMixedDtypes) {
  for (DType fp8 : {DType::kFloat8E4M3FN, DType::kFloat8E5M2}) {
    const DType other =
        fp8 == DType::kFloat8E4M3FN ? DType::kFloat8E5M2 : DType::kFloat8E4M3FN;
    PaddedDims dims;
    dims.dtype = fp8;
    EXPECT_TRUE(RejectsBackward(
        PaddedGrad(dims),
        [&](BackwardArgs& a) { a.key = Tensor(other, a.key.shape); },
        {"key.dtype"}))
        << DTypeName(fp8);
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.value =
                                      Tensor(DType::kFloat16, a.value.shape);
                                },
                                {"value.dtype"}))
        << DTypeName(fp8);
    EXPECT_TRUE(RejectsBackward(
        PaddedGrad(dims),
        [&](BackwardArgs& a) { a.dy = Tensor(other, a.dy.shape); },
        {"dy.dtype"}))
        << DTypeName(fp8);
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.attention_in = Tensor(
                                      DType::kFloat16, a.attention_in->shape);
                                },
                                {"attention_in.dtype"}))
        << DTypeName(fp8);
  }
}

// ----------------------------------------------------------------------------
// Grad residuals: all or none; softmax_max/sum FLOAT32 [B,N1,Sq,8];
// attention_in shaped like dy.

TEST_F(PlanRejectFeatureTest, RejectsPartialResiduals) {
  const PaddedDims dims;
  ASSERT_TRUE(PlansBoth(Padded(dims), PaddedGrad(dims, false)));
  EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                              [](BackwardArgs& a) { a.softmax_max.reset(); },
                              {"softmax_max"}));
  EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                              [](BackwardArgs& a) { a.softmax_sum.reset(); },
                              {"softmax_sum"}));
  EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                              [](BackwardArgs& a) { a.attention_in.reset(); },
                              {"attention_in"}));
}

TEST_F(PlanRejectFeatureTest, RejectsSoftmaxStatsNotFloat32) {
  const PaddedDims dims;
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_max =
                                      Tensor(dtype, a.softmax_max->shape);
                                },
                                {"softmax_max.dtype"}));
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_sum =
                                      Tensor(dtype, a.softmax_sum->shape);
                                },
                                {"softmax_sum.dtype"}));
  }
}

TEST_F(PlanRejectFeatureTest, RejectsSoftmaxStatsNotBN1Sq8) {
  const PaddedDims dims;
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kB, kN1, kS1, 1},
                                         {kB, kN2, kS1, 8},
                                         {kB, kN1, kS2, 8},
                                         {kB, kN1, kS1},
                                         {kB * kS1, kN1, 8}}) {
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_max =
                                      Tensor(DType::kFloat32, shape);
                                },
                                {"softmax_max.shape"}))
        << ::testing::PrintToString(shape);
    EXPECT_TRUE(RejectsBackward(PaddedGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_sum =
                                      Tensor(DType::kFloat32, shape);
                                },
                                {"softmax_sum.shape"}))
        << ::testing::PrintToString(shape);
  }
}

TEST_F(PlanRejectFeatureTest, RejectsAttentionInShapeDifferentFromDy) {
  PaddedDims dims;
  dims.layout = Layout::kBSH;
  EXPECT_TRUE(RejectsBackward(
      PaddedGrad(dims),
      [&](BackwardArgs& a) {
        a.attention_in = Tensor(DType::kFloat32, {kB, kS1, kN1 * kD + 1});
      },
      {"attention_in.shape"}));
}

// ----------------------------------------------------------------------------
// Scalar options.

TEST_F(PlanRejectFeatureTest, RejectsNonFiniteScaleValue) {
  const PaddedDims dims;
  for (double scale : {std::numeric_limits<double>::quiet_NaN(),
                       std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity()}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.scale_value = scale; },
                            {"scale_value"}))
        << scale;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsSparseModeOutsideZeroToEight) {
  const PaddedDims dims;
  for (int64_t mode : {-1, 9, 100}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.sparse_mode = mode; },
                            {"sparse_mode"}))
        << mode;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsPseTypeOutsideZeroToThree) {
  const PaddedDims dims;
  for (int64_t pse_type : {-1, 4}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.pse_type = pse_type; },
                            {"pse_type"}))
        << pse_type;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsInnerPreciseOutsideZeroToTwo) {
  PaddedDims dims;
  for (int64_t value : {1, 2}) {
    ForwardArgs args = Padded(dims);
    args.options.inner_precise = value;
    BackwardArgs grad = PaddedGrad(dims);
    grad.options.inner_precise = value;
    EXPECT_TRUE(PlansBoth(args, grad)) << value;
  }
  for (int64_t value : {-1, 3}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.inner_precise = value; },
                            {"inner_precise"}))
        << value;
  }
}

TEST_F(PlanRejectFeatureTest, RejectsStartIndexWithMoreThanOneElement) {
  const PaddedDims dims;
  ForwardArgs one = Padded(dims);
  one.options.q_start_idx = {3};
  one.options.kv_start_idx = {1};
  BackwardArgs one_grad = PaddedGrad(dims);
  one_grad.options.q_start_idx = {3};
  one_grad.options.kv_start_idx = {1};
  EXPECT_TRUE(PlansBoth(one, one_grad));
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) {
                            a.options.q_start_idx = {0, 0};
                          },
                          {"q_start_idx"}));
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) {
                            a.options.kv_start_idx = {1, 2, 3};
                          },
                          {"kv_start_idx"}));
}

TEST_F(PlanRejectFeatureTest, RejectsSequenceLengthsWithPaddedLayouts) {
  const PaddedDims dims;
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) {
                            a.options.actual_seq_qlen = {kS1, 2 * kS1};
                          },
                          {"actual_seq_qlen"}));
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [&](auto& a) {
                            a.options.actual_seq_kvlen = {kS2, 2 * kS2};
                          },
                          {"actual_seq_kvlen"}));
}

}  // namespace
}  // namespace attnserve::core
