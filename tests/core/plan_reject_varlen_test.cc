// Constraints of the TND (varlen) layout from the
// FlashAttentionUnpaddingScoreGradV2 document and the conventions:
// actual_seq_qlen / actual_seq_kvlen (cumulative end offsets), T and D
// ranges, head dims qD == kD >= vD, the TND shapes of dy, attention_in and
// softmax_max/sum [T1,N1,8], the two TND mask forms, and the batch limits.
// Each test starts from a valid request (asserted to plan), breaks one rule
// and expects INVALID_ARGUMENT on the field the conventions name.
#include <cstdint>
#include <string>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/plan_feature_fixture.h"

namespace attnserve::core {
namespace {

using ::attnserve::core::plan_testing::FeaturePlanTest;
using ::attnserve::core::plan_testing::kD;
using ::attnserve::core::plan_testing::kN1;
using ::attnserve::core::plan_testing::kN2;
using ::attnserve::core::plan_testing::PlansBoth;
using ::attnserve::core::plan_testing::RejectsBackward;
using ::attnserve::core::plan_testing::RejectsBoth;
using ::attnserve::core::plan_testing::SetDy;
using ::attnserve::core::plan_testing::TndDims;

class PlanRejectVarlenTest : public FeaturePlanTest {};

constexpr int64_t kMaxTokens = 1024 * 1024;

// Cumulative end offsets of `count` batches of `len` tokens each.
std::vector<int64_t> Uniform(int64_t count, int64_t len) {
  std::vector<int64_t> cu(static_cast<size_t>(count));
  for (int64_t b = 0; b < count; ++b)
    cu[static_cast<size_t>(b)] = (b + 1) * len;
  return cu;
}

// ----------------------------------------------------------------------------
// actual_seq_qlen / actual_seq_kvlen.

TEST_F(PlanRejectVarlenTest, RejectsTndWithoutSequenceLengths) {
  const TndDims dims;
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) { a.options.actual_seq_qlen.clear(); },
                          {"actual_seq_qlen"}));
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) { a.options.actual_seq_kvlen.clear(); },
                          {"actual_seq_kvlen"}));
}

TEST_F(PlanRejectVarlenTest, RejectsSequenceLengthArraysOfDifferentLengths) {
  const TndDims dims;  // B = 2.
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) {
                            a.options.actual_seq_kvlen = {3, 5, 8};
                          },
                          {"actual_seq_kvlen"}));
}

TEST_F(PlanRejectVarlenTest, RejectsMoreThan2048Batches) {
  TndDims dims;
  dims.cu_q = dims.cu_kv = Uniform(2048, 1);
  dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims, false),
                          [&](auto& a) {
                            const std::vector<int64_t> shape = {2049, 1, 1};
                            a.query = Tensor(DType::kFloat32, shape);
                            a.key = Tensor(DType::kFloat32, shape);
                            a.value = Tensor(DType::kFloat32, shape);
                            SetDy(a, Tensor(DType::kFloat32, shape));
                            a.options.actual_seq_qlen =
                                a.options.actual_seq_kvlen = Uniform(2049, 1);
                          },
                          {"actual_seq_qlen", "actual_seq_kvlen"}));
}

TEST_F(PlanRejectVarlenTest, RejectsDecreasingSequenceLengths) {
  // Equal neighbours (empty batches) are legal, also Sq_b > 0 with
  // Skv_b == 0: Sq = {2, 0, 4}, Skv = {0, 3, 5}.
  TndDims dims;
  dims.cu_q = {2, 2, 6};
  dims.cu_kv = {0, 3, 8};
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) {
                            a.options.actual_seq_qlen = {4, 2, 6};
                          },
                          {"actual_seq_qlen"}));
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) {
                            a.options.actual_seq_kvlen = {4, 3, 8};
                          },
                          {"actual_seq_kvlen"}));
}

TEST_F(PlanRejectVarlenTest, RejectsNegativeFirstSequenceLength) {
  const TndDims dims;
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) {
                            a.options.actual_seq_qlen = {-1, 6};
                          },
                          {"actual_seq_qlen"}));
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                          [](auto& a) {
                            a.options.actual_seq_kvlen = {-2, 8};
                          },
                          {"actual_seq_kvlen"}));
}

TEST_F(PlanRejectVarlenTest, RejectsLastSequenceLengthNotEqualToTokens) {
  const TndDims dims;  // T1 = 6, T2 = 8.
  for (int64_t last : {5, 7}) {
    EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                            [&](auto& a) {
                              a.options.actual_seq_qlen = {2, last};
                            },
                            {"actual_seq_qlen"}))
        << last;
  }
  for (int64_t last : {7, 9}) {
    EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                            [&](auto& a) {
                              a.options.actual_seq_kvlen = {3, last};
                            },
                            {"actual_seq_kvlen"}))
        << last;
  }
}

// ----------------------------------------------------------------------------
// Ranges: T 1..1M, N 1..256, D 1..768.

TEST_F(PlanRejectVarlenTest, RejectsMoreThan1MTokens) {
  // T1 = T2 = 1M is legal (FLOAT16, one head, D = 1: 2 MiB per tensor).
  TndDims dims;
  dims.cu_q = dims.cu_kv = {1, kMaxTokens};
  dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  dims.dtype = DType::kFloat16;
  const std::vector<int64_t> over = {kMaxTokens + 1, 1, 1};
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims, false),
                          [&](auto& a) {
                            a.query = Tensor(DType::kFloat16, over);
                            SetDy(a, Tensor(DType::kFloat16, over));
                            a.options.actual_seq_qlen = {2, kMaxTokens + 1};
                          },
                          {"query.shape[0]"}));
  EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims, false),
                          [&](auto& a) {
                            a.key = Tensor(DType::kFloat16, over);
                            a.value = Tensor(DType::kFloat16, over);
                            a.options.actual_seq_kvlen = {2, kMaxTokens + 1};
                          },
                          {"key.shape[0]"}));
}

TEST_F(PlanRejectVarlenTest, RejectsHeadNumDifferentFromQueryHeads) {
  const TndDims dims;
  for (int64_t head_num : {2, 8}) {
    EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                            [&](auto& a) { a.options.head_num = head_num; },
                            {"head_num"}))
        << head_num;
  }
}

TEST_F(PlanRejectVarlenTest, RejectsQueryHeadsNotMultipleOfKeyHeads) {
  const TndDims dims;  // N1 = 4.
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims),
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat32, {dims.t2(), 3, kD});
                    a.value = Tensor(DType::kFloat32, {dims.t2(), 3, kD});
                  },
                  {"key.shape[1]"}));
}

TEST_F(PlanRejectVarlenTest, RejectsHeadDimAbove768) {
  TndDims dims;
  dims.d = dims.dv = 768;  // Legal in TND (512 for padded layouts).
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims, false),
                  [&](auto& a) {
                    a.query = Tensor(DType::kFloat32, {dims.t1(), kN1, 769});
                    a.key = Tensor(DType::kFloat32, {dims.t2(), kN2, 769});
                  },
                  {"query.shape[2]"}));
}

TEST_F(PlanRejectVarlenTest, RejectsKeyHeadDimDifferentFromQuery) {
  const TndDims dims;
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims),
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat32, {dims.t2(), kN2, kD + 2});
                  },
                  {"key.shape[2]"}));
}

TEST_F(PlanRejectVarlenTest, RejectsValueHeadDimAboveKeyHeadDim) {
  TndDims dims;
  dims.dv = kD - 2;  // vD < kD is legal.
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims, false),
                  [&](auto& a) {
                    a.value = Tensor(DType::kFloat32, {dims.t2(), kN2, kD + 1});
                    SetDy(a, Tensor(DType::kFloat32, {dims.t1(), kN1, kD + 1}));
                  },
                  {"value.shape[2]"}));
}

TEST_F(PlanRejectVarlenTest, RejectsValueShapeDifferentFromKeyExceptD) {
  const TndDims dims;
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims),
                  [&](auto& a) {
                    a.value = Tensor(DType::kFloat32, {dims.t2() + 1, kN2, kD});
                  },
                  {"value.shape[0]"}));
  EXPECT_TRUE(
      RejectsBoth(Tnd(dims), TndGrad(dims),
                  [&](auto& a) {
                    a.value = Tensor(DType::kFloat32, {dims.t2(), kN2 / 2, kD});
                  },
                  {"value.shape[1]"}));
}

// ----------------------------------------------------------------------------
// Grad tensors in TND.

TEST_F(PlanRejectVarlenTest, RejectsDyShapeNotT1N1Dv) {
  TndDims dims;
  dims.dv = 6;
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{dims.t1(), kN1, kD},
                                         {dims.t1() + 1, kN1, 6},
                                         {dims.t1(), kN2, 6},
                                         {dims.t2(), kN1, 6}}) {
    EXPECT_TRUE(RejectsBackward(
        TndGrad(dims),
        [&](BackwardArgs& a) { a.dy = Tensor(DType::kFloat32, shape); },
        {"dy.shape"}))
        << ::testing::PrintToString(shape);
  }
}

TEST_F(PlanRejectVarlenTest, RejectsAttentionInShapeDifferentFromDy) {
  const TndDims dims;
  EXPECT_TRUE(RejectsBackward(
      TndGrad(dims),
      [&](BackwardArgs& a) {
        a.attention_in = Tensor(DType::kFloat32, {dims.t1(), kN1, kD + 1});
      },
      {"attention_in.shape"}));
}

TEST_F(PlanRejectVarlenTest, RejectsSoftmaxStatsNotT1N18) {
  const TndDims dims;  // T1 = 6, B = 2, max Sq = 4.
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kN1, dims.t1(), 8},
                                         {dims.batch(), kN1, 4, 8},
                                         {dims.t1(), kN1, 1},
                                         {dims.t1(), kN2, 8},
                                         {dims.t1(), kN1}}) {
    EXPECT_TRUE(RejectsBackward(TndGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_max =
                                      Tensor(DType::kFloat32, shape);
                                },
                                {"softmax_max.shape"}))
        << ::testing::PrintToString(shape);
    EXPECT_TRUE(RejectsBackward(TndGrad(dims),
                                [&](BackwardArgs& a) {
                                  a.softmax_sum =
                                      Tensor(DType::kFloat32, shape);
                                },
                                {"softmax_sum.shape"}))
        << ::testing::PrintToString(shape);
  }
}

// ----------------------------------------------------------------------------
// TND masks: [maxSq, maxSkv] or [T1, T2] (modes 0 and 1).

TEST_F(PlanRejectVarlenTest, RejectsMaskOtherThanMaxLengthsOrTokens) {
  const TndDims dims;  // max Sq = 4, max Skv = 5, T1 = 6, T2 = 8.
  for (const std::vector<int64_t>& legal :
       std::vector<std::vector<int64_t>>{{4, 5}, {6, 8}}) {
    ForwardArgs fwd = Tnd(dims);
    BackwardArgs bwd = TndGrad(dims);
    fwd.options.atten_mask = bwd.options.atten_mask =
        Tensor(DType::kBool, legal);
    EXPECT_TRUE(PlansBoth(fwd, bwd)) << ::testing::PrintToString(legal);
  }
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{4, 6},
                                         {3, 5},
                                         {6, 5},
                                         {1, 1, 4, 5},
                                         {dims.batch(), 1, 4, 5},
                                         {dims.batch(), kN1, 4, 5},
                                         {2048, 2048}}) {
    EXPECT_TRUE(RejectsBoth(
        Tnd(dims), TndGrad(dims),
        [&](auto& a) { a.options.atten_mask = Tensor(DType::kUInt8, shape); },
        {"atten_mask.shape"}))
        << ::testing::PrintToString(shape);
  }
}

TEST_F(PlanRejectVarlenTest, RejectsMaskOfOtherDtype) {
  const TndDims dims;
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kInt32}) {
    EXPECT_TRUE(RejectsBoth(Tnd(dims), TndGrad(dims),
                            [&](auto& a) {
                              a.options.atten_mask = Tensor(dtype, {4, 5});
                            },
                            {"atten_mask.dtype"}))
        << DTypeName(dtype);
  }
}

// ----------------------------------------------------------------------------
// Batch limit with prefix (mode 6): B <= 1024 in TND.

TEST_F(PlanRejectVarlenTest, RejectsMoreThan1024BatchesWithPrefix) {
  TndDims dims;
  dims.cu_q = dims.cu_kv = Uniform(1024, 1);
  dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims, false);
  for (AttentionOptions* o : {&fwd.options, &bwd.options}) {
    o->sparse_mode = 6;
    o->prefix.assign(1024, 1);  // Sq = Skv = 1: prefix in [0, 1].
  }
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [&](auto& a) {
                            const std::vector<int64_t> shape = {1025, 1, 1};
                            a.query = Tensor(DType::kFloat32, shape);
                            a.key = Tensor(DType::kFloat32, shape);
                            a.value = Tensor(DType::kFloat32, shape);
                            SetDy(a, Tensor(DType::kFloat32, shape));
                            a.options.actual_seq_qlen =
                                a.options.actual_seq_kvlen = Uniform(1025, 1);
                            a.options.prefix.assign(1025, 1);
                          },
                          {"actual_seq_qlen", "actual_seq_kvlen", "prefix"}));
}

}  // namespace
}  // namespace attnserve::core
