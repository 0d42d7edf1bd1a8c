// PlanForward / PlanBackward refusals: one negative case per validation rule
// (INVALID_ARGUMENT with the field named), and UNIMPLEMENTED for valid
// options the core does not support yet.
#include <limits>
#include <string>
#include <vector>

#include "attnserve/core/plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/plan_fixture.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::core::plan_testing::IsInvalidField;
using ::attnserve::core::plan_testing::kB;
using ::attnserve::core::plan_testing::kD;
using ::attnserve::core::plan_testing::kN1;
using ::attnserve::core::plan_testing::kN2;
using ::attnserve::core::plan_testing::kS1;
using ::attnserve::core::plan_testing::kS2;
using ::attnserve::core::plan_testing::PlanTest;
using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;

// ----------------------------------------------------------------------------
// INVALID_ARGUMENT, one rule each.

TEST_F(PlanTest, RejectsMissingLayout) {
  ForwardArgs args = ValidForward();
  args.options.input_layout = "";
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "input_layout"));
}

TEST_F(PlanTest, RejectsUnknownLayout) {
  ForwardArgs args = ValidForward();
  args.options.input_layout = "NSBD";
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "input_layout"));
  args.options.input_layout = "bsh";
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "input_layout"));
}

TEST_F(PlanTest, UnknownLayoutIsEchoedEscapedAndCut) {
  ForwardArgs args = ValidForward();
  args.options.input_layout = "BSND\n" + std::string(100, 'x');
  const absl::Status status = PlanForward(args).status();
  EXPECT_TRUE(IsInvalidField(status, "input_layout"));
  EXPECT_EQ(status.message(),
            "input_layout: must be one of BSH, SBH, BSND, BNSD, TND, got "
            "\"BSND\\n" +
                std::string(27, 'x') + "...(105 bytes)\"");
}

TEST_F(PlanTest, RejectsQueryRankWrongForLayout) {
  ForwardArgs args = ValidForward(Layout::kBNSD);
  args.options.input_layout = "BSH";  // Rank 3 expected, query has 4.
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query.shape"));
  args = ValidForward(Layout::kBSH);
  args.options.input_layout = "BSND";  // Rank 4 expected, query has 3.
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query.shape"));
}

TEST_F(PlanTest, RejectsKeyRankWrongForLayout) {
  ForwardArgs args = ValidForward(Layout::kBSND);
  args.key = Tensor(DType::kFloat32, {kB, kS2, kN2 * kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.shape"));
}

TEST_F(PlanTest, RejectsNonPositiveHeadNum) {
  for (int64_t head_num : {0, -4}) {
    ForwardArgs args = ValidForward(Layout::kBSH);
    args.options.head_num = head_num;
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "head_num"))
        << head_num;
  }
}

TEST_F(PlanTest, RejectsHeadNumNotMatchingQueryHeads) {
  for (Layout layout : {Layout::kBSND, Layout::kBNSD}) {
    ForwardArgs args = ValidForward(layout);
    args.options.head_num = 2;  // Query has 4 heads.
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "head_num"))
        << LayoutName(layout);
  }
}

TEST_F(PlanTest, RejectsHeadNumNotDividingHiddenSize) {
  for (Layout layout : {Layout::kBSH, Layout::kSBH}) {
    ForwardArgs args = ValidForward(layout);
    args.options.head_num = 3;  // H = 32.
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "head_num"))
        << LayoutName(layout);
  }
}

TEST_F(PlanTest, RejectsKeyHeadsNotDividingQueryHeads) {
  ForwardArgs args = ValidForward(Layout::kBNSD);
  args.key = Qkv(Layout::kBNSD, 3, kS2, kD);
  args.value = Qkv(Layout::kBNSD, 3, kS2, kD);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.shape"));
  // BSH: key H = 3 * D gives 3 key heads.
  args = ValidForward(Layout::kBSH);
  args.key = Qkv(Layout::kBSH, 3, kS2, kD);
  args.value = Qkv(Layout::kBSH, 3, kS2, kD);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.shape"));
}

TEST_F(PlanTest, RejectsKeyBatchMismatch) {
  ForwardArgs args = ValidForward(Layout::kBSND);
  args.key = Tensor(DType::kFloat32, {kB + 1, kS2, kN2, kD});
  args.value = Tensor(DType::kFloat32, {kB + 1, kS2, kN2, kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.shape"));
}

TEST_F(PlanTest, RejectsValueBatchOrLengthDifferentFromKey) {
  ForwardArgs args = ValidForward(Layout::kBNSD);
  args.value = Tensor(DType::kFloat32, {kB, kN2, kS2 + 1, kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.shape"));
  args.value = Tensor(DType::kFloat32, {kB - 1, kN2, kS2, kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.shape"));
  args = ValidForward(Layout::kSBH);
  args.value = Tensor(DType::kFloat32, {kS2 - 1, kB, kN2 * kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.shape"));
}

TEST_F(PlanTest, RejectsValueHeadsDifferentFromKey) {
  ForwardArgs args = ValidForward(Layout::kBNSD);
  args.value = Tensor(DType::kFloat32, {kB, 1, kS2, kD});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.shape"));
}

TEST_F(PlanTest, RejectsQueryKeyHeadDimMismatch) {
  ForwardArgs args = ValidForward(Layout::kBNSD);
  args.key = Tensor(DType::kFloat32, {kB, kN2, kS2, kD + 2});
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.shape"));
}

TEST_F(PlanTest, RejectsDtypeMismatch) {
  ForwardArgs args = ValidForward();
  args.key = Qkv(Layout::kBNSD, kN2, kS2, kD, DType::kFloat16);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "key.dtype"));
  args = ValidForward();
  args.value = Qkv(Layout::kBNSD, kN2, kS2, kD, DType::kBFloat16);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.dtype"));
  BackwardArgs grad = ValidBackward();
  grad.dy = Qkv(Layout::kBNSD, kN1, kS1, kD, DType::kFloat16);
  EXPECT_TRUE(IsInvalidField(PlanBackward(grad).status(), "dy.dtype"));
}

TEST_F(PlanTest, RejectsNonComputeQueryDtype) {
  ForwardArgs args = ValidForward();
  args.query = Qkv(Layout::kBNSD, kN1, kS1, kD, DType::kInt32);
  args.key = Qkv(Layout::kBNSD, kN2, kS2, kD, DType::kInt32);
  args.value = Qkv(Layout::kBNSD, kN2, kS2, kD, DType::kInt32);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query.dtype"));
}

TEST_F(PlanTest, RejectsDataSizeNotMatchingShape) {
  ForwardArgs args = ValidForward();
  args.query.size_bytes -= 4;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query"));
  args = ValidForward();
  args.value.size_bytes += 2;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value"));
  ForwardArgs masked = ValidForward();
  masked.options.atten_mask = Tensor(DType::kBool, {kS1, kS2});
  masked.options.atten_mask->size_bytes = kS1 * kS2 - 1;
  EXPECT_TRUE(IsInvalidField(PlanForward(masked).status(), "atten_mask"));
}

TEST_F(PlanTest, RejectsNegativeDimension) {
  ForwardArgs args = ValidForward();
  args.query.shape = {kB, kN1, -kS1, kD};
  args.query.size_bytes = 0;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query"));
}

TEST_F(PlanTest, RejectsMaskOfWrongShape) {
  const std::vector<std::vector<int64_t>> bad = {
      {kS1, kS2 + 1},     {kS1 + 1, kS2},   {1, kS1, kS2},
      {kB, 2, kS1, kS2},  {3, 1, kS1, kS2}, {kB, kN1, kS1, kS2, 1},
      {kB, kN1, kS2, kS1}};
  for (const std::vector<int64_t>& shape : bad) {
    ForwardArgs args = ValidForward();
    args.options.atten_mask = Tensor(DType::kBool, shape);
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "atten_mask.shape"))
        << ::testing::PrintToString(shape);
  }
}

TEST_F(PlanTest, RejectsMaskOfWrongDtype) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kInt32}) {
    ForwardArgs args = ValidForward();
    args.options.atten_mask = Tensor(dtype, {kS1, kS2});
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "atten_mask.dtype"))
        << DTypeName(dtype);
  }
}

TEST_F(PlanTest, RejectsSoftmaxStatsOfWrongShapeOrDtype) {
  BackwardArgs args = ValidBackward();
  args.softmax_max = Tensor(DType::kFloat32, {kB, kN1, kS1, 1});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "softmax_max.shape"));
  args = ValidBackward();
  args.softmax_sum = Tensor(DType::kFloat32, {kB, kN2, kS1, 8});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "softmax_sum.shape"));
  args = ValidBackward();
  args.softmax_max = Tensor(DType::kFloat16, {kB, kN1, kS1, 8});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "softmax_max.dtype"));
  args = ValidBackward();
  args.softmax_sum = Tensor(DType::kBFloat16, {kB, kN1, kS1, 8});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "softmax_sum.dtype"));
}

TEST_F(PlanTest, RejectsDyShapeDifferentFromQuery) {
  BackwardArgs args = ValidBackward(Layout::kBSND);
  args.dy = Tensor(DType::kFloat32, {kB, kS1 + 1, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "dy.shape"));
  // dy carries the value head dim: with Dv = 6 a D-wide dy is wrong.
  args = ValidBackward(Layout::kBSND);
  args.value = Tensor(DType::kFloat32, {kB, kS2, kN2, 6});
  args.attention_in = Tensor(DType::kFloat32, {kB, kS1, kN1, 6});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "dy.shape"));
  args.dy = Tensor(DType::kFloat32, {kB, kS1, kN1, 6});
  EXPECT_THAT(PlanBackward(args), IsOk());
}

TEST_F(PlanTest, RejectsAttentionInOfWrongShapeOrDtype) {
  BackwardArgs args = ValidBackward(Layout::kBSH);
  args.attention_in = Tensor(DType::kFloat32, {kB, kS1, kN1 * kD + 1});
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "attention_in"));
  args = ValidBackward(Layout::kBSH);
  args.attention_in = Qkv(Layout::kBSH, kN1, kS1, kD, DType::kFloat16);
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "attention_in"));
}

TEST_F(PlanTest, RejectsPartialResiduals) {
  BackwardArgs args = ValidBackward();
  args.softmax_sum.reset();
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "softmax_sum"));
  args = ValidBackward();
  args.attention_in.reset();
  EXPECT_TRUE(IsInvalidField(PlanBackward(args).status(), "attention_in"));
}

TEST_F(PlanTest, RejectsKeepProbOutsideZeroOne) {
  for (double keep_prob : {0.0, -0.5, 1.5}) {
    ForwardArgs args = ValidForward();
    args.options.keep_prob = keep_prob;
    args.options.seed = 1;
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "keep_prob"))
        << keep_prob;
  }
}

TEST_F(PlanTest, RejectsNonFiniteScale) {
  ForwardArgs args = ValidForward();
  args.options.scale_value = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "scale_value"));
  args.options.scale_value = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "scale_value"));
}

TEST_F(PlanTest, RejectsSparseModeOutOfRange) {
  for (int64_t mode : {-1, 9}) {
    ForwardArgs args = ValidForward();
    args.options.sparse_mode = mode;
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "sparse_mode"))
        << mode;
  }
}

TEST_F(PlanTest, RejectsPseTypeOutOfRange) {
  ForwardArgs args = ValidForward();
  args.options.pse_type = 4;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "pse_type"));
}

TEST_F(PlanTest, RejectsHeadNumAboveTheDocumentedRange) {
  ForwardArgs args = ValidForward(Layout::kBSH);
  args.query = Qkv(Layout::kBSH, 257, kS1, 1);
  args.key = Qkv(Layout::kBSH, 257, kS2, 1);
  args.value = Qkv(Layout::kBSH, 257, kS2, 1);
  args.options.head_num = 257;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "head_num"));
}

TEST_F(PlanTest, RejectsHeadDimAboveTheDocumentedRange) {
  ForwardArgs args = ValidForward();
  args.query = Qkv(Layout::kBNSD, kN1, kS1, 513);
  args.key = Qkv(Layout::kBNSD, kN2, kS2, 513);
  args.value = Qkv(Layout::kBNSD, kN2, kS2, 513);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "query.shape[3]"));
  args = ValidForward();
  args.value = Qkv(Layout::kBNSD, kN2, kS2, 513);
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "value.shape[3]"));
}

TEST_F(PlanTest, RejectsInnerPreciseOutsideZeroToTwo) {
  for (int64_t value : {-1, 3}) {
    ForwardArgs args = ValidForward();
    args.options.inner_precise = value;
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "inner_precise"))
        << value;
  }
  for (int64_t value : {1, 2}) {
    ForwardArgs args = ValidForward();
    args.options.inner_precise = value;
    EXPECT_THAT(PlanForward(args).status(), IsOk()) << value;
  }
}

TEST_F(PlanTest, RejectsPseTypeOtherThanOneWithoutPse) {
  ForwardArgs args = ValidForward();
  args.options.pse_type = 2;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "pse"));
}

TEST_F(PlanTest, RejectsPrefixOutsidePrefixModes) {
  ForwardArgs args = ValidForward();
  args.options.prefix = {1, 1};
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "prefix"));
}

TEST_F(PlanTest, RejectsSequenceLengthsWithoutTnd) {
  ForwardArgs args = ValidForward();
  args.options.actual_seq_qlen = {kS1};
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "actual_seq_qlen"));
  args = ValidForward();
  args.options.actual_seq_kvlen = {kS2};
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "actual_seq_kvlen"));
}

TEST_F(PlanTest, RejectsEmptyBand) {
  // next < 0 needs pre >= -next.
  ForwardArgs args = ValidForward();
  args.options.next_tokens = -2;
  args.options.pre_tokens = 1;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "pre_tokens"));
  // pre < 0 needs next >= -pre.
  args = ValidForward();
  args.options.pre_tokens = -3;
  args.options.next_tokens = 2;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "next_tokens"));
  // A band entirely above the matrix keeps nothing.
  args = ValidForward();
  args.options.next_tokens = -kS1;
  args.options.pre_tokens = 2 * kS1;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "next_tokens"));
  // A band entirely below it neither.
  args = ValidForward();
  args.options.pre_tokens = -kS2;
  args.options.next_tokens = 2 * kS2;
  EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "pre_tokens"));
}

// ----------------------------------------------------------------------------
// Options that used to be refused as not implemented now plan.

TEST_F(PlanTest, EverySparseModeOfAPaddedLayoutPlans) {
  for (int64_t mode : {1, 2, 3, 4, 6}) {
    ForwardArgs args = ValidForward();
    args.options.sparse_mode = mode;
    if (mode == 1) args.options.atten_mask = Tensor(DType::kBool, {kS1, kS2});
    if (mode == 6) args.options.prefix = {kS2, kS2};
    EXPECT_THAT(PlanForward(args), IsOk()) << mode;
  }
  ForwardArgs prefix = ValidForward();
  prefix.options.sparse_mode = 5;
  prefix.options.atten_mask = Tensor(DType::kBool, {kB, 1, kS1, kS2});
  prefix.options.prefix = {kS2, kS2};
  EXPECT_THAT(PlanForward(prefix), IsOk());
  // Modes 7 and 8 exist only for TND.
  for (int64_t mode : {7, 8}) {
    ForwardArgs args = ValidForward();
    args.options.sparse_mode = mode;
    EXPECT_TRUE(IsInvalidField(PlanForward(args).status(), "sparse_mode"))
        << mode;
  }
}

TEST_F(PlanTest, ExternalPseOfBothTypesPlans) {
  for (int64_t pse_type : {0, 1}) {
    ForwardArgs args = ValidForward();
    args.options.pse = Tensor(DType::kFloat32, {kB, kN1, kS1, kS2});
    args.options.pse_type = pse_type;
    ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args));
    EXPECT_EQ(plan.pse.kind, PseSpec::Kind::kExternal) << pse_type;
  }
}

TEST_F(PlanTest, DropoutBySeedOrMaskPlans) {
  ForwardArgs args = ValidForward();
  args.options.keep_prob = 0.9;
  args.options.seed = 7;
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan by_seed, PlanForward(args));
  EXPECT_EQ(by_seed.dropout.kind, DropoutSpec::Kind::kSeed);
  args = ValidForward();
  args.options.keep_prob = 0.9;
  const int64_t bits = kB * kN1 * kS1 * kS2;
  args.options.drop_mask = Tensor(DType::kUInt8, {(bits + 7) / 8});
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan by_mask, PlanForward(args));
  EXPECT_EQ(by_mask.dropout.kind, DropoutSpec::Kind::kMask);
}

TEST_F(PlanTest, TndPlansPerBatchSpans) {
  ForwardArgs args;
  args.query = Tensor(DType::kFloat32, {6, kN1, kD});
  args.key = Tensor(DType::kFloat32, {8, kN2, kD});
  args.value = Tensor(DType::kFloat32, {8, kN2, kD});
  args.options.head_num = kN1;
  args.options.input_layout = "TND";
  args.options.actual_seq_qlen = {2, 6};
  args.options.actual_seq_kvlen = {3, 8};
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args));
  EXPECT_EQ(plan.dims.b, 2);
  EXPECT_EQ(plan.dims.s1, 4);
  EXPECT_EQ(plan.dims.s2, 5);
  ASSERT_EQ(plan.batches.size(), 2u);
  EXPECT_EQ(plan.batches[1].q_start, 2);
  EXPECT_EQ(plan.batches[1].s1, 4);
  EXPECT_EQ(plan.batches[1].kv_start, 3);
  EXPECT_EQ(plan.batches[1].s2, 5);
  EXPECT_EQ(plan.outputs[1].shape, (std::vector<int64_t>{6, kN1, 8}));
  BackwardArgs grad;
  grad.query = args.query;
  grad.key = args.key;
  grad.value = args.value;
  grad.dy = Tensor(DType::kFloat32, {6, kN1, kD});
  grad.options = args.options;
  EXPECT_THAT(PlanBackward(grad), IsOk());
}

}  // namespace
}  // namespace attnserve::core
