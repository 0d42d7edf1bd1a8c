// Constraints of sparse_mode 0-8 from the FlashAttentionScoreGradV2 and
// FlashAttentionUnpaddingScoreGradV2 documents and the conventions: mask
// dtype/shape per mode and layout, the standard compressed masks (shape and
// exact contents), prefix presence/length/range, the layouts each mode
// allows, and the pre_tokens / next_tokens rules of modes 0, 4, 7 and 8.
// Each test starts from a valid request (asserted to plan), breaks one rule
// and expects INVALID_ARGUMENT on the field the conventions name.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/plan_feature_fixture.h"

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
using ::attnserve::core::plan_testing::RejectsBoth;
using ::attnserve::core::plan_testing::SetDy;
using ::attnserve::core::plan_testing::TndDims;

class PlanRejectSparseTest : public FeaturePlanTest {};

// ----------------------------------------------------------------------------
// Mask dtype and shape of the full-mask modes (0, 1, 5).

TEST_F(PlanRejectSparseTest, RejectsModeZeroMaskOfOtherShapes) {
  const PaddedDims dims;  // B=2, N1=4, N2=2, Sq=5, Skv=7.
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kS1, kS2 + 1},
                                         {kS2, kS1},
                                         {1, kS1, kS2},
                                         {kB, kN2, kS1, kS2},
                                         {kB + 1, 1, kS1, kS2},
                                         {1, kN1, kS1, kS2},
                                         {kB, kN1, kS1, kS2, 1},
                                         {2048, 2048}}) {
    EXPECT_TRUE(RejectsBoth(
        Padded(dims), PaddedGrad(dims),
        [&](auto& a) { a.options.atten_mask = Tensor(DType::kBool, shape); },
        {"atten_mask.shape"}))
        << ::testing::PrintToString(shape);
  }
}

TEST_F(PlanRejectSparseTest, RejectsModeZeroMaskOtherThanBoolOrUint8) {
  const PaddedDims dims;
  for (DType dtype :
       {DType::kFloat32, DType::kFloat16, DType::kInt32, DType::kInt64}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) {
                              a.options.atten_mask = Tensor(dtype, {kS1, kS2});
                            },
                            {"atten_mask.dtype"}))
        << DTypeName(dtype);
  }
}

TEST_F(PlanRejectSparseTest, RejectsCompressedMaskOtherThanBoolOrUint8) {
  const PaddedDims dims;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) { o.sparse_mode = 2; });
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd,
      [&](auto& a) {
        a.options.atten_mask = Tensor(DType::kFloat16, {2048, 2048});
      },
      {"atten_mask"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeOneWithoutMask) {
  const PaddedDims dims;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView mask = Tensor(DType::kBool, {kB, 1, kS1, kS2});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.sparse_mode = 1;
    o.atten_mask = mask;
  });
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd, [](auto& a) { a.options.atten_mask.reset(); }, {"atten_mask"}));
  // TND too.
  const TndDims tnd;
  ForwardArgs tfwd = Tnd(tnd);
  BackwardArgs tbwd = TndGrad(tnd);
  const TensorView tmask = Tensor(DType::kUInt8, {tnd.t1(), tnd.t2()});
  EditBoth(tfwd, tbwd, [&](AttentionOptions& o) {
    o.sparse_mode = 1;
    o.atten_mask = tmask;
  });
  EXPECT_TRUE(RejectsBoth(tfwd, tbwd,
                          [](auto& a) { a.options.atten_mask.reset(); },
                          {"atten_mask"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeFiveWithoutMask) {
  const PaddedDims dims;  // Sq <= Skv: prefix in [Skv-Sq, Skv] = [2, 7].
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView mask = Tensor(DType::kBool, {kB, 1, kS1, kS2});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.sparse_mode = 5;
    o.atten_mask = mask;
    o.prefix = {3, 7};
  });
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd, [](auto& a) { a.options.atten_mask.reset(); }, {"atten_mask"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeFiveMaskBroadcastOverBatch) {
  const PaddedDims dims;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView full = Tensor(DType::kUInt8, {kB, kN1, kS1, kS2});
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.sparse_mode = 5;
    o.atten_mask = full;
    o.prefix = {2, 4};
  });
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kS1, kS2}, {1, 1, kS1, kS2}}) {
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd,
        [&](auto& a) { a.options.atten_mask = Tensor(DType::kBool, shape); },
        {"atten_mask.shape"}))
        << ::testing::PrintToString(shape);
  }
}

// ----------------------------------------------------------------------------
// Compressed masks (modes 2, 3, 4, 6, 7, 8): optional; when sent, exactly
// the standard shape and contents.

TEST_F(PlanRejectSparseTest, RejectsCompressedMaskOfOtherShape) {
  const PaddedDims dims;
  for (int64_t mode : {2, 3, 4}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    EditBoth(fwd, bwd, [&](AttentionOptions& o) { o.sparse_mode = mode; });
    EXPECT_TRUE(PlansBoth(fwd, bwd)) << "no mask, mode " << mode;
    const TensorView standard = CompressedMask(DType::kUInt8);
    EditBoth(fwd, bwd, [&](AttentionOptions& o) { o.atten_mask = standard; });
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
             {kS1, kS2}, {2048, 2047}, {3072, 2048}, {1, 1, 2048, 2048}}) {
      EXPECT_TRUE(RejectsBoth(
          fwd, bwd,
          [&](auto& a) { a.options.atten_mask = Tensor(DType::kBool, shape); },
          {"atten_mask"}))
          << "mode " << mode << " " << ::testing::PrintToString(shape);
    }
  }
  // Mode 6 takes [3072, 2048] only.
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView prefix_mask = PrefixCompressedMask();
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {2, 5};
    o.atten_mask = prefix_mask;
  });
  EXPECT_TRUE(RejectsBoth(
      fwd, bwd, [&](auto& a) { a.options.atten_mask = CompressedMask(); },
      {"atten_mask"}));
}

TEST_F(PlanRejectSparseTest, RejectsCompressedMaskWithOtherContents) {
  const PaddedDims dims;
  // Flipped cells: on the diagonal, above it, below it.
  const std::vector<std::pair<int64_t, int64_t>> flips = {
      {0, 0}, {3, 4}, {2047, 0}};
  for (int64_t mode : {2, 3, 4}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    const TensorView standard = CompressedMask();
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.sparse_mode = mode;
      o.atten_mask = standard;
    });
    for (const auto& flip : flips) {
      EXPECT_TRUE(RejectsBoth(fwd, bwd,
                              [&](auto& a) {
                                a.options.atten_mask =
                                    CompressedMask(DType::kBool, flip);
                              },
                              {"atten_mask"}))
          << "mode " << mode << " cell " << flip.first << "," << flip.second;
    }
  }
  // Mode 6: the triangle part and the [zeros | ones] block below it.
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  const TensorView prefix_mask = PrefixCompressedMask(DType::kUInt8);
  EditBoth(fwd, bwd, [&](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {2, 5};
    o.atten_mask = prefix_mask;
  });
  for (const auto& flip : std::vector<std::pair<int64_t, int64_t>>{
           {10, 11}, {2048, 5}, {3071, 2047}}) {
    EXPECT_TRUE(RejectsBoth(fwd, bwd,
                            [&](auto& a) {
                              a.options.atten_mask =
                                  PrefixCompressedMask(DType::kUInt8, flip);
                            },
                            {"atten_mask"}))
        << "mode 6 cell " << flip.first << "," << flip.second;
  }
}

TEST_F(PlanRejectSparseTest,
       RejectsModeSevenOrEightCompressedMaskOfOtherShapeOrContents) {
  // Modes 7 and 8 on Sq = {2, 4}, Skv = {3, 5} with legal bands.
  const TndDims dims;
  for (int64_t mode : {7, 8}) {
    ForwardArgs fwd = Tnd(dims);
    BackwardArgs bwd = TndGrad(dims);
    const TensorView standard = CompressedMask();
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.sparse_mode = mode;
      o.pre_tokens = 5;
      o.next_tokens = 0;
      o.atten_mask = standard;
    });
    EXPECT_TRUE(RejectsBoth(fwd, bwd,
                            [&](auto& a) {
                              a.options.atten_mask = CompressedMask(
                                  DType::kBool,
                                  std::pair<int64_t, int64_t>{1, 1});
                            },
                            {"atten_mask"}))
        << "mode " << mode;
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd,
        [&](auto& a) { a.options.atten_mask = PrefixCompressedMask(); },
        {"atten_mask"}))
        << "mode " << mode;
  }
}

// ----------------------------------------------------------------------------
// Layouts per mode: 5 padded only; 7 and 8 TND only.

TEST_F(PlanRejectSparseTest, RejectsModeFiveInTnd) {
  const TndDims dims;  // Sq = {2, 4}, Skv = {3, 5}.
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {1, 3};
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.sparse_mode = 5; },
                          {"sparse_mode"}));
}

TEST_F(PlanRejectSparseTest, RejectsModesSevenAndEightInPaddedLayouts) {
  const PaddedDims dims;
  for (int64_t mode : {7, 8}) {
    EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                            [&](auto& a) {
                              a.options.sparse_mode = mode;
                              a.options.pre_tokens = kS2;
                              a.options.next_tokens = 0;
                            },
                            {"sparse_mode"}))
        << mode;
  }
}

// ----------------------------------------------------------------------------
// prefix (modes 5 and 6): required, length B, prefix[b] in [0, Skv] when
// Sq > Skv, else [Skv - Sq, Skv]; B <= 2048 with prefix.

TEST_F(PlanRejectSparseTest, RejectsPrefixOutsidePrefixModes) {
  const PaddedDims dims;  // Mode 0.
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [](auto& a) {
                            a.options.prefix = {2, 3};
                          },
                          {"prefix"}));
}

TEST_F(PlanRejectSparseTest, RejectsPrefixModesWithoutPrefix) {
  const PaddedDims dims;
  for (int64_t mode : {5, 6}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    const TensorView mask = Tensor(DType::kBool, {kB, kN1, kS1, kS2});
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.sparse_mode = mode;
      o.prefix = {2, 3};
      if (mode == 5) o.atten_mask = mask;
    });
    EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.prefix.clear(); },
                            {"prefix"}))
        << mode;
  }
  const TndDims tnd;
  ForwardArgs fwd = Tnd(tnd);
  BackwardArgs bwd = TndGrad(tnd);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {1, 3};
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.prefix.clear(); },
                          {"prefix"}));
}

TEST_F(PlanRejectSparseTest, RejectsPrefixOfLengthOtherThanBatch) {
  const PaddedDims dims;  // B = 2.
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {2, 3};
  });
  for (const std::vector<int64_t>& prefix :
       std::vector<std::vector<int64_t>>{{2}, {2, 3, 4}}) {
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd, [&](auto& a) { a.options.prefix = prefix; }, {"prefix"}))
        << ::testing::PrintToString(prefix);
  }
}

TEST_F(PlanRejectSparseTest, RejectsPrefixOutsideItsRange) {
  struct Case {
    int64_t mode, sq, skv;
    std::vector<int64_t> valid, bad;
    std::string field;
  };
  const std::vector<Case> cases = {
      // Sq <= Skv: [Skv - Sq, Skv] = [2, 7].
      {6, 5, 7, {2, 7}, {1, 7}, "prefix[0]"},
      {6, 5, 7, {2, 7}, {2, 8}, "prefix[1]"},
      {5, 5, 7, {7, 2}, {7, -1}, "prefix[1]"},
      // Sq > Skv: [0, Skv] = [0, 5].
      {6, 7, 5, {0, 5}, {-1, 5}, "prefix[0]"},
      {6, 7, 5, {0, 5}, {0, 6}, "prefix[1]"},
      {5, 7, 5, {5, 0}, {6, 0}, "prefix[0]"},
  };
  for (const Case& c : cases) {
    PaddedDims dims;
    dims.sq = c.sq;
    dims.skv = c.skv;
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    const TensorView mask = Tensor(DType::kBool, {kB, 1, c.sq, c.skv});
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.sparse_mode = c.mode;
      o.prefix = c.valid;
      if (c.mode == 5) o.atten_mask = mask;
    });
    EXPECT_TRUE(RejectsBoth(
        fwd, bwd, [&](auto& a) { a.options.prefix = c.bad; }, {c.field}))
        << "mode " << c.mode << " Sq " << c.sq << " Skv " << c.skv << " prefix "
        << ::testing::PrintToString(c.bad);
  }
  // TND, per batch: Sq = {2, 4}, Skv = {3, 5} -> [1, 3] and [1, 5].
  const TndDims tnd;
  ForwardArgs fwd = Tnd(tnd);
  BackwardArgs bwd = TndGrad(tnd);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix = {1, 5};
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [](auto& a) {
                            a.options.prefix = {0, 5};
                          },
                          {"prefix[0]"}));
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [](auto& a) {
                            a.options.prefix = {3, 6};
                          },
                          {"prefix[1]"}));
}

TEST_F(PlanRejectSparseTest, RejectsMoreThan2048BatchesWithPrefix) {
  PaddedDims dims;
  dims.b = 2048;
  dims.n1 = dims.n2 = dims.sq = dims.skv = dims.d = dims.dv = 1;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims, false);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 6;
    o.prefix.assign(2048, 1);
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [&](auto& a) {
                            const std::vector<int64_t> shape = {2049, 1, 1, 1};
                            a.query = Tensor(DType::kFloat32, shape);
                            a.key = Tensor(DType::kFloat32, shape);
                            a.value = Tensor(DType::kFloat32, shape);
                            SetDy(a, Tensor(DType::kFloat32, shape));
                            a.options.prefix.assign(2049, 1);
                          },
                          {"prefix", "query.shape[0]"}));
}

// ----------------------------------------------------------------------------
// pre_tokens / next_tokens.

// next < 0 needs pre >= -next; pre < 0 needs next >= -pre.
::testing::AssertionResult RejectsEmptyBand(const ForwardArgs& fwd,
                                            const BackwardArgs& bwd) {
  ::testing::AssertionResult pre = RejectsBoth(fwd, bwd,
                                               [](auto& a) {
                                                 a.options.next_tokens = -2;
                                                 a.options.pre_tokens = 1;
                                               },
                                               {"pre_tokens"});
  if (!pre) return pre;
  return RejectsBoth(fwd, bwd,
                     [](auto& a) {
                       a.options.pre_tokens = -3;
                       a.options.next_tokens = 2;
                     },
                     {"next_tokens"});
}

TEST_F(PlanRejectSparseTest, RejectsEmptyBandInModeZero) {
  const PaddedDims dims;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.pre_tokens = 2;
    o.next_tokens = 1;
  });
  EXPECT_TRUE(RejectsEmptyBand(fwd, bwd));
}

TEST_F(PlanRejectSparseTest, RejectsEmptyBandInModeFour) {
  const PaddedDims dims;
  ForwardArgs fwd = Padded(dims);
  BackwardArgs bwd = PaddedGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 4;
    o.pre_tokens = 2;
    o.next_tokens = 1;
  });
  EXPECT_TRUE(RejectsEmptyBand(fwd, bwd));
}

TEST_F(PlanRejectSparseTest, RejectsModeZeroBandOutsideTheMatrix) {
  const PaddedDims dims;  // Sq = 5, Skv = 7.
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [](auto& a) {
                            a.options.next_tokens = -kS1;
                            a.options.pre_tokens = 2 * kS1;
                          },
                          {"next_tokens"}));
  EXPECT_TRUE(RejectsBoth(Padded(dims), PaddedGrad(dims),
                          [](auto& a) {
                            a.options.pre_tokens = -kS2;
                            a.options.next_tokens = 2 * kS2;
                          },
                          {"pre_tokens"}));
}

TEST_F(PlanRejectSparseTest, IgnoresPreAndNextTokensOutsideBandModes) {
  // Modes 1, 2, 3, 5 and 6 ignore pre/next: an "empty" band is legal there.
  const PaddedDims dims;
  for (int64_t mode : {1, 2, 3, 5, 6}) {
    ForwardArgs fwd = Padded(dims);
    BackwardArgs bwd = PaddedGrad(dims);
    const TensorView mask = Tensor(DType::kBool, {kB, 1, kS1, kS2});
    EditBoth(fwd, bwd, [&](AttentionOptions& o) {
      o.sparse_mode = mode;
      o.pre_tokens = -100;
      o.next_tokens = -100;
      if (mode == 1 || mode == 5) o.atten_mask = mask;
      if (mode == 5 || mode == 6) o.prefix = {2, 3};
    });
    EXPECT_TRUE(PlansBoth(fwd, bwd)) << mode;
  }
}

TEST_F(PlanRejectSparseTest, RejectsModeSevenBandOutsideItsLimits) {
  // Band batch = last with Sq != 0: Sq = 4, Skv = 5. pre >= 5 and
  // -1 <= next <= 0.
  const TndDims dims;
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 7;
    o.pre_tokens = 5;
    o.next_tokens = -1;
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.pre_tokens = 4; },
                          {"pre_tokens"}));
  for (int64_t next : {int64_t{1}, int64_t{-2}, kDefaultWindowTokens}) {
    EXPECT_TRUE(RejectsBoth(fwd, bwd,
                            [&](auto& a) { a.options.next_tokens = next; },
                            {"next_tokens"}))
        << next;
  }
  // The band batch is the LAST non-empty one: a trailing empty batch
  // changes nothing.
  TndDims trailing = dims;
  trailing.cu_q = {2, 6, 6};
  trailing.cu_kv = {3, 8, 9};
  ForwardArgs tfwd = Tnd(trailing);
  BackwardArgs tbwd = TndGrad(trailing);
  EditBoth(tfwd, tbwd, [](AttentionOptions& o) {
    o.sparse_mode = 7;
    o.pre_tokens = 5;
    o.next_tokens = -1;
  });
  EXPECT_TRUE(RejectsBoth(tfwd, tbwd, [](auto& a) { a.options.pre_tokens = 4; },
                          {"pre_tokens"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeSevenWithPse) {
  // Sq_b == Skv_b, so ALiBi slopes are otherwise legal (and legal in mode 8).
  TndDims dims;
  dims.cu_q = dims.cu_kv = {2, 6};
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 7;
    o.pre_tokens = 4;
    o.next_tokens = 0;
  });
  const TensorView slopes = Tensor(DType::kFloat32, {kN1});
  ForwardArgs mode8 = fwd;
  BackwardArgs mode8_grad = bwd;
  EditBoth(mode8, mode8_grad, [&](AttentionOptions& o) {
    o.sparse_mode = 8;
    o.pse_type = 2;
    o.pse = slopes;
  });
  EXPECT_TRUE(PlansBoth(mode8, mode8_grad));
  EXPECT_TRUE(RejectsBoth(fwd, bwd,
                          [&](auto& a) {
                            a.options.pse_type = 2;
                            a.options.pse = slopes;
                          },
                          {"pse", "sparse_mode"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeEightBandOutsideItsLimits) {
  // Band batch = FIRST with Sq != 0: batch 1 (Sq = 2, Skv = 3), so
  // pre >= 3 and next >= -1; batch 0 (Sq = 0, Skv = 4) does not count.
  TndDims dims;
  dims.cu_q = {0, 2, 6};
  dims.cu_kv = {4, 7, 12};
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) {
    o.sparse_mode = 8;
    o.pre_tokens = 3;
    o.next_tokens = -1;
  });
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.pre_tokens = 2; },
                          {"pre_tokens"}));
  EXPECT_TRUE(RejectsBoth(fwd, bwd, [](auto& a) { a.options.next_tokens = -2; },
                          {"next_tokens"}));
}

TEST_F(PlanRejectSparseTest, RejectsModeThreeInTndWithQueryLongerThanKey) {
  const TndDims dims;  // Sq = {2, 4} <= Skv = {3, 5}.
  ForwardArgs fwd = Tnd(dims);
  BackwardArgs bwd = TndGrad(dims);
  EditBoth(fwd, bwd, [](AttentionOptions& o) { o.sparse_mode = 3; });
  // Skv = {1, 7}: batch 0 has Sq 2 > Skv 1.
  EXPECT_TRUE(
      RejectsBoth(fwd, bwd,
                  [](auto& a) {
                    a.options.actual_seq_kvlen = {1, 8};
                  },
                  {"actual_seq_qlen", "actual_seq_kvlen", "sparse_mode"}));
}

}  // namespace
}  // namespace attnserve::core
