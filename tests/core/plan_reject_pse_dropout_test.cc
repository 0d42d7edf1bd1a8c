// Constraints of pse (pse_type 0-3) and dropout from the
// FlashAttentionScoreGrad(V2) / UnpaddingScoreGradV2 documents and the
// conventions: external pse shapes and dtype, the ALiBi-compressed
// [.., 1024, Skv] form and its conditions, slopes for types 2/3, pse with
// empty batches, keep_prob, drop_mask dtype/size and its exclusivity with
// seed. Each test starts from a valid request (asserted to plan), breaks one
// rule and expects INVALID_ARGUMENT on the field the conventions name.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attnserve/core/plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/plan_feature_fixture.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::core::plan_testing::EditBoth;
using ::attnserve::core::plan_testing::FeaturePlanTest;
using ::attnserve::core::plan_testing::kB;
using ::attnserve::core::plan_testing::kN1;
using ::attnserve::core::plan_testing::kN2;
using ::attnserve::core::plan_testing::kS1;
using ::attnserve::core::plan_testing::kS2;
using ::attnserve::core::plan_testing::PaddedDims;
using ::attnserve::core::plan_testing::PlansBoth;
using ::attnserve::core::plan_testing::RejectsBackward;
using ::attnserve::core::plan_testing::RejectsBoth;
using ::attnserve::core::plan_testing::SetDy;
using ::attnserve::core::plan_testing::TndDims;
using ::attnserve::test::IsOk;

class PlanRejectPseDropoutTest : public FeaturePlanTest {};

// Sets pse and pse_type on both requests.
void SetPse(ForwardArgs& fwd, BackwardArgs& bwd, const TensorView& pse,
            int64_t pse_type) {
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.pse = pse;
    o.pse_type = pse_type;
  });
}

// ----------------------------------------------------------------------------
// pse presence and external pse (types 0 and 1).

TEST_F(PlanRejectPseDropoutTest, RejectsPseTypeOtherThanOneWithoutPse) {
  const PaddedDims dims;
  for (int64_t pse_type : {0, 2, 3}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) { a.options.pse_type = pse_type; },
                            {"pse"}))
        << pse_type;
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsExternalPseOfOtherShapes) {
  const PaddedDims dims;  // B=2, N1=4, N2=2, Sq=5, Skv=7.
  for (int64_t pse_type : {0, 1}) {
    for (const std::vector<int64_t>& legal : std::vector<std::vector<int64_t>>{
             {1, kN1, kS1, kS2}, {kB, kN1, 1, kS2}}) {
      ForwardArgs fwd = Padded(dims);
      BackwardArgs bwd = PaddedGrad(dims);
      SetPse(fwd, bwd, Tensor(DType::kFloat32, legal), pse_type);
      EXPECT_TRUE(PlansBoth(fwd, bwd)) << ::testing::PrintToString(legal);
    }
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    SetPse(fwd, bwd, Tensor(DType::kFloat32, {kB, kN1, kS1, kS2}), pse_type);
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{kB, kN2, kS1, kS2},
                                           {kB, 1, kS1, kS2},
                                           {kB, kN1, kS1, kS2 + 1},
                                           {kB, kN1, kS1 + 1, kS2},
                                           {kB + 1, kN1, kS1, kS2},
                                           {1, kN1, 1, kS2},
                                           {kS1, kS2},
                                           {kN1, kS1, kS2},
                                           {kB, kN1}}) {
      EXPECT_TRUE(RejectsBoth(
          fwd, bwd,
          [&](auto& a) { a.options.pse = Tensor(DType::kFloat32, shape); },
          {"pse.shape"}))
          << "pse_type " << pse_type << " " << ::testing::PrintToString(shape);
    }
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsExternalPseOfOtherDtypeThanQuery) {
  PaddedDims dims;
  dims.dtype = DType::kFloat16;
  for (int64_t pse_type : {0, 1}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    SetPse(fwd, bwd, Tensor(DType::kFloat16, {kB, kN1, kS1, kS2}), pse_type);
    for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kUInt8}) {
      EXPECT_TRUE(
          RejectsBoth(fwd, bwd,
                      [&](auto& a) {
                        a.options.pse = Tensor(dtype, {kB, kN1, kS1, kS2});
                      },
                      {"pse.dtype"}))
          << "pse_type " << pse_type << " " << DTypeName(dtype);
    }
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsFloat8PseWithFloat8Grad) {
  // FLOAT8 grads take a FLOAT16, BFLOAT16 or FLOAT32 pse.
  PaddedDims dims;
  dims.dtype = DType::kFloat8E4M3FN;
  for (DType legal : {DType::kFloat16, DType::kBFloat16}) {
    BackwardArgs bwd = PaddedGrad(dims);
    bwd.options.pse = Tensor(legal, {kB, kN1, kS1, kS2});
    EXPECT_THAT(PlanBackward(bwd), IsOk()) << DTypeName(legal);
  }
  BackwardArgs bwd = PaddedGrad(dims);
  bwd.options.pse = Tensor(DType::kFloat32, {kB, kN1, kS1, kS2});
  for (DType dtype : {DType::kFloat8E4M3FN, DType::kFloat8E5M2}) {
    EXPECT_TRUE(
        RejectsBackward(bwd,
                        [&](BackwardArgs& a) {
                          a.options.pse = Tensor(dtype, {kB, kN1, kS1, kS2});
                        },
                        {"pse.dtype"}))
        << DTypeName(dtype);
  }
}

// ----------------------------------------------------------------------------
// ALiBi-compressed pse [B,N1,1024,Skv] / [1,N1,1024,Skv]: only when
// Sq > 1024, Sq == Skv and the mode is causal (2; 3; 0 with next == 0).

TEST_F(PlanRejectPseDropoutTest, RejectsCompressedPseOutsideItsConditions) {
  PaddedDims dims;
  dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  dims.sq = dims.skv = 1025;
  dims.dtype = DType::kFloat16;
  const TensorView pse = Tensor(DType::kFloat16, {kB, 1, 1024, 1025});
  const TensorView pse1 = Tensor(DType::kFloat16, {1, 1, 1024, 1025});
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims, false);
  SetPse(fwd, bwd, pse, 1);
  EditBoth(fwd, bwd, [](AttentionOptions& o) { o.sparse_mode = 2; });
  // Legal variants: [1,N1,1024,Skv], type 0, mode 3, mode 0 with next 0.
  {
    ForwardArgs f = fwd;
    BackwardArgs g = bwd;
    SetPse(f, g, pse1, 0);
    EXPECT_TRUE(PlansBoth(f, g));
    EditBoth(f, g, [](AttentionOptions& o) { o.sparse_mode = 3; });
    EXPECT_TRUE(PlansBoth(f, g));
    EditBoth(f, g, [](AttentionOptions& o) {
      o.sparse_mode = 0;
      o.next_tokens = 0;
    });
    EXPECT_TRUE(PlansBoth(f, g));
  }
  // Not causal.
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.sparse_mode = 0; },
                          {"pse"}));
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [](auto& a) {
                            a.options.sparse_mode = 0;
                            a.options.next_tokens = 1;
                          },
                          {"pse"}));
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [](auto& a) {
                            a.options.sparse_mode = 4;
                            a.options.pre_tokens = 10;
                            a.options.next_tokens = 0;
                          },
                          {"pse"}));
  // Sq != Skv (mode 3 stays causal).
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd,
      [&](auto& a) {
        a.options.sparse_mode = 3;
        a.key = Tensor(DType::kFloat16, {kB, 1, 1026, 1});
        a.value = Tensor(DType::kFloat16, {kB, 1, 1026, 1});
        a.options.pse = Tensor(DType::kFloat16, {kB, 1, 1024, 1026});
      },
      {"pse"}));
  // Sq <= 1024.
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd,
      [&](auto& a) {
        const std::vector<int64_t> shape = {kB, 1, 1000, 1};
        a.query = Tensor(DType::kFloat16, shape);
        a.key = Tensor(DType::kFloat16, shape);
        a.value = Tensor(DType::kFloat16, shape);
        SetDy(a, Tensor(DType::kFloat16, shape));
        a.options.pse = Tensor(DType::kFloat16, {kB, 1, 1024, 1000});
      },
      {"pse"}));
}

TEST_F(PlanRejectPseDropoutTest, RejectsTndPseOtherThanCompressedOrSlopes) {
  // Sq_b == Skv_b = 1025 for both batches, causal: [B,N1,1024,S] with
  // S = max Skv_b.
  TndDims dims;
  dims.cu_q = dims.cu_kv = {1025, 2050};
  dims.n1 = dims.n2 = dims.d = dims.dv = 1;
  dims.dtype = DType::kFloat16;
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  SetPse(fwd, bwd, Tensor(DType::kFloat16, {2, 1, 1024, 1025}), 1);
  EditBoth(fwd, bwd, [](AttentionOptions& o) { o.sparse_mode = 2; });
  {
    ForwardArgs f = fwd;
    BackwardArgs g = bwd;
    SetPse(f, g, Tensor(DType::kFloat16, {1, 1, 1024, 1025}), 0);
    EditBoth(f, g, [](AttentionOptions& o) { o.sparse_mode = 3; });
    EXPECT_TRUE(PlansBoth(f, g));
  }
  // A full-size (uncompressed) pse.
  EXPECT_TRUE(
      RejectsBoth(fwd, bwd,
                  [&](auto& a) {
                    a.options.pse = Tensor(DType::kFloat16, {2, 1, 1025, 1025});
                  },
                  {"pse"}));
  // Not causal.
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.sparse_mode = 0; },
                          {"pse"}));
  // A batch with Sq_b <= 1024: Sq = Skv = {1000, 1050}.
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd,
      [&](auto& a) {
        a.options.actual_seq_qlen = a.options.actual_seq_kvlen = {1000, 2050};
        a.options.pse = Tensor(DType::kFloat16, {2, 1, 1024, 1050});
      },
      {"pse"}));
  // A batch with Sq_b != Skv_b: Skv = {1026, 1025}.
  EXPECT_TRUE(
      RejectsBoth(fwd, bwd,
                  [&](auto& a) {
                    a.key = Tensor(DType::kFloat16, {2051, 1, 1});
                    a.value = Tensor(DType::kFloat16, {2051, 1, 1});
                    a.options.actual_seq_kvlen = {1026, 2051};
                    a.options.pse = Tensor(DType::kFloat16, {2, 1, 1024, 1026});
                  },
                  {"pse"}));
}

// ----------------------------------------------------------------------------
// Slopes (types 2 and 3): FLOAT32 [B,N1] or [N1]; Sq == Skv.

TEST_F(PlanRejectPseDropoutTest, RejectsSlopesOtherThanFloat32) {
  PaddedDims dims;
  dims.skv = dims.sq;
  dims.dtype = DType::kFloat16;
  for (int64_t pse_type : {2, 3}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    SetPse(fwd, bwd, Tensor(DType::kFloat32, {kB, kN1}), pse_type);
    for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
      EXPECT_TRUE(RejectsBoth(fwd, bwd,
                              [&](auto& a) {
                                a.options.pse = Tensor(dtype, {kB, kN1});
                              },
                              {"pse.dtype"}))
          << "pse_type " << pse_type << " " << DTypeName(dtype);
    }
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsSlopesOfOtherShapes) {
  PaddedDims dims;
  dims.skv = dims.sq;
  for (int64_t pse_type : {2, 3}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    SetPse(fwd, bwd, Tensor(DType::kFloat32, {kN1}), pse_type);
    EXPECT_TRUE(PlansBoth(fwd, bwd));
    SetPse(fwd, bwd, Tensor(DType::kFloat32, {kB, kN1}), pse_type);
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{kN2},
                                           {kN1 + 1},
                                           {kB},
                                           {kB, kN2},
                                           {1, kN1},
                                           {kB, kN1, 1},
                                           {kB, kN1, kS1, kS1}}) {
      EXPECT_TRUE(RejectsBoth(
          fwd, bwd,
          [&](auto& a) { a.options.pse = Tensor(DType::kFloat32, shape); },
          {"pse.shape"}))
          << "pse_type " << pse_type << " " << ::testing::PrintToString(shape);
    }
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsSlopesWithQueryAndKeyOfOtherLengths) {
  PaddedDims dims;
  dims.skv = dims.sq;
  const TensorView slopes = Tensor(DType::kFloat32, {kB, kN1});
  for (int64_t pse_type : {2, 3}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    SetPse(fwd, bwd, slopes, pse_type);
    EXPECT_TRUE(
        RejectsBoth(fwd, bwd,
                    [&](auto& a) {
                      a.key = Tensor(DType::kFloat32, {kB, kN2, kS2, 8});
                      a.value = Tensor(DType::kFloat32, {kB, kN2, kS2, 8});
                    },
                    {"pse"}))
        << pse_type;
  }
  // TND: per batch. Sq = Skv = {2, 4}, then Skv = {3, 5}.
  TndDims tnd;
  tnd.cu_q = tnd.cu_kv = {2, 6};
  ForwardArgs fwd = Tnd(tnd);
  BackwardArgs bwd = TndGrad(tnd);
  SetPse(fwd, bwd, Tensor(DType::kFloat32, {kN1}), 2);
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [&](auto& a) {
                            a.key = Tensor(DType::kFloat32, {8, kN2, 8});
                            a.value = Tensor(DType::kFloat32, {8, kN2, 8});
                            a.options.actual_seq_kvlen = {3, 8};
                          },
                          {"pse"}));
}

TEST_F(PlanRejectPseDropoutTest, RejectsPseWithEmptyBatch) {
  TndDims dims;
  dims.cu_q = dims.cu_kv = {2, 6};
  for (int64_t pse_type : {2, 3}) {
    ForwardArgs fwd = Tnd(dims);
    BackwardArgs bwd = TndGrad(dims);
    SetPse(fwd, bwd, Tensor(DType::kFloat32, {kN1}), pse_type);
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd,
        [](auto& a) {
          a.options.actual_seq_qlen = a.options.actual_seq_kvlen = {2, 2, 6};
        },
        {"pse"}))
        << pse_type;
  }
}

// ----------------------------------------------------------------------------
// Dropout.

TEST_F(PlanRejectPseDropoutTest, RejectsKeepProbOutsideZeroOne) {
  const PaddedDims dims;
  for (double keep_prob :
       {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::infinity()}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) {
                              a.options.keep_prob = keep_prob;
                              a.options.seed = 1;
                            },
                            {"keep_prob"}))
        << keep_prob;
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsKeepProbBelowOneWithoutMaskOrSeed) {
  const PaddedDims dims;
  {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    EditBoth(fwd, bwd, [](AttentionOptions& o) {
      o.keep_prob = 0.5;
      o.seed = 7;
      o.offset = 3;
    });
    EXPECT_TRUE(RejectsBoth(fwd, bwd,
                            [](auto& a) {
                              a.options.seed.reset();
                              a.options.offset.reset();
                            },
                            {"keep_prob"}));
  }
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView mask = Bytes({(kB * kN1 * kS1 * kS2 + 7) / 8});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.keep_prob = 0.5;
    o.drop_mask = mask;
  });
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd, [](auto& a) { a.options.drop_mask.reset(); }, {"keep_prob"}));
}

TEST_F(PlanRejectPseDropoutTest, RejectsDropMaskTogetherWithSeed) {
  const PaddedDims dims;
  // keep_prob == 1 with a seed alone: no dropout, the seed is ignored.
  {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    EditBoth(fwd, bwd, [](AttentionOptions& o) { o.seed = 5; });
    EXPECT_TRUE(PlansBoth(fwd, bwd));
  }
  const TensorView mask = Bytes({(kB * kN1 * kS1 * kS2 + 7) / 8});
  for (double keep_prob : {0.5, 1.0}) {  // The mask applies at 1.0 too.
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.keep_prob = keep_prob;
      o.drop_mask = mask;
    });
    EXPECT_TRUE(
        RejectsBoth(fwd, bwd, [](auto& a) { a.options.seed = 1; }, {"seed"}))
        << keep_prob;
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsDropMaskOtherThanUint8) {
  const PaddedDims dims;
  const int64_t bytes = (kB * kN1 * kS1 * kS2 + 7) / 8;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView mask = Bytes({bytes});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.keep_prob = 0.9;
    o.drop_mask = mask;
  });
  for (DType dtype : {DType::kBool, DType::kInt32, DType::kFloat16}) {
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd,
        [&](auto& a) { a.options.drop_mask = Tensor(dtype, {bytes}); },
        {"drop_mask.dtype"}))
        << DTypeName(dtype);
  }
}

TEST_F(PlanRejectPseDropoutTest, RejectsDropMaskShorterThanTheBits) {
  // Padded: B * N1 * Sq * Skv bits, ceil(bits / 8) bytes, any shape.
  struct Case {
    PaddedDims dims;
    int64_t bytes;
  };
  PaddedDims odd;  // 1 * 1 * 5 * 7 = 35 bits -> 5 bytes.
  odd.b = odd.n1 = odd.n2 = 1;
  for (const Case& c : {Case{PaddedDims{}, 35}, Case{odd, 5}}) {
    ForwardArgs fwd = Padded(c.dims);
    BackwardArgs bwd = PaddedGrad(c.dims);
    const TensorView mask = Bytes({c.bytes});
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.keep_prob = 0.8;
      o.drop_mask = mask;
    });
    for (const std::vector<int64_t>& legal :
         std::vector<std::vector<int64_t>>{{1, c.bytes}, {c.bytes + 3}}) {
      ForwardArgs f = fwd;
      BackwardArgs g = bwd;
      const TensorView other = Bytes(legal);
      EditBoth(f, g, [&](AttentionOptions& o) { o.drop_mask = other; });
      EXPECT_TRUE(PlansBoth(f, g)) << ::testing::PrintToString(legal);
    }
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{c.bytes - 1}, {2, 2}, {0}}) {
      EXPECT_TRUE(RejectsBoth(
          fwd, bwd, [&](auto& a) { a.options.drop_mask = Bytes(shape); },
          {"drop_mask.shape"}))
          << c.bytes << " bytes needed, got "
          << ::testing::PrintToString(shape);
    }
  }
  // TND: N1 * sum_b Sq_b * Skv_b bits: 4 * (2*3 + 3*5) = 84 -> 11 bytes.
  TndDims tnd;
  tnd.cu_q = {2, 5};
  tnd.cu_kv = {3, 8};
  ForwardArgs fwd = Tnd(tnd);
  BackwardArgs bwd = TndGrad(tnd);
  const TensorView mask = Bytes({11});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.keep_prob = 0.8;
    o.drop_mask = mask;
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [&](auto& a) { a.options.drop_mask = Bytes({10}); },
                          {"drop_mask.shape"}));
}

}  // namespace
}  // namespace attnserve::core
