// FLOAT8 grad inputs (FLOAT8_E4M3FN, FLOAT8_E5M2) against the float64
// reference: the test-side codec on hand-checked codes, the backward in
// padded layouts and TND with masks, sparse modes, pse and dropout, with
// recomputed residuals and with the reference's (attention_in in FLOAT8);
// outputs are FLOAT32. The forward refuses FLOAT8.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/float8.h"
#include "tests/testing/param_names.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

constexpr DType kE4M3 = DType::kFloat8E4M3FN;
constexpr DType kE5M2 = DType::kFloat8E5M2;

// ---------------------------------------------------------------------------
// The test-side codec.

TEST(Float8CodecTest, DecodesE4M3FNCodes) {
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x00), 0.0);
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x01), std::ldexp(1.0, -9));  // Subnormal.
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x07), 7 * std::ldexp(1.0, -9));
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x08), std::ldexp(1.0, -6));  // Min normal.
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x38), 1.0);
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x3B), 1.375);
  EXPECT_EQ(DecodeFloat8(kE4M3, 0xB8), -1.0);
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x7E), 448.0);  // Largest finite.
  EXPECT_EQ(DecodeFloat8(kE4M3, 0x78), 256.0);  // Exponent 15 is finite.
  EXPECT_TRUE(std::isnan(DecodeFloat8(kE4M3, 0x7F)));
  EXPECT_TRUE(std::isnan(DecodeFloat8(kE4M3, 0xFF)));
  EXPECT_TRUE(std::signbit(DecodeFloat8(kE4M3, 0x80)));
}

TEST(Float8CodecTest, DecodesE5M2Codes) {
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x01), std::ldexp(1.0, -16));  // Subnormal.
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x04), std::ldexp(1.0, -14));  // Min normal.
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x3C), 1.0);
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x3E), 1.5);
  EXPECT_EQ(DecodeFloat8(kE5M2, 0xC0), -2.0);
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x7B), 57344.0);
  EXPECT_EQ(DecodeFloat8(kE5M2, 0x7C), std::numeric_limits<double>::infinity());
  EXPECT_EQ(DecodeFloat8(kE5M2, 0xFC),
            -std::numeric_limits<double>::infinity());
  for (int code : {0x7D, 0x7E, 0x7F, 0xFD}) {
    EXPECT_TRUE(std::isnan(DecodeFloat8(kE5M2, static_cast<uint8_t>(code))))
        << code;
  }
}

TEST(Float8CodecTest, EncodesToNearestWithTiesToEven) {
  for (DType dtype : {kE4M3, kE5M2}) {
    for (int code = 0; code < 256; ++code) {
      const double v = DecodeFloat8(dtype, static_cast<uint8_t>(code));
      if (!std::isfinite(v) || v == 0) continue;
      EXPECT_EQ(EncodeFloat8(dtype, v), code) << DTypeName(dtype) << " " << v;
    }
  }
  EXPECT_EQ(EncodeFloat8(kE4M3, 0.3), 0x2A);     // 0.3125.
  EXPECT_EQ(EncodeFloat8(kE4M3, 1.0625), 0x38);  // Tie: 1.0 (even).
  EXPECT_EQ(EncodeFloat8(kE4M3, 1.1875), 0x3A);  // Tie: 1.25 (even).
  EXPECT_EQ(EncodeFloat8(kE4M3, -460.0), 0xFE);  // Below 448 + 16.
  EXPECT_EQ(EncodeFloat8(kE5M2, 1.125), 0x3C);   // Tie: 1.0 (even).
  EXPECT_EQ(EncodeFloat8(kE5M2, 1.375), 0x3E);   // Tie: 1.5 (even).
  EXPECT_EQ(EncodeFloat8(kE5M2, std::ldexp(1.0, -17)), 0x00);  // Tie: 0.
}

// ---------------------------------------------------------------------------
// The backward.

FeatureConfig Base(DType dtype, Layout layout) {
  FeatureConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.b = 2;
  c.n1 = 4;
  c.n2 = 2;
  c.s1 = 37;
  c.s2 = 53;
  c.d = 40;
  c.dv = 40;
  c.mask = MaskForm::kPerBatch;
  c.seed =
      60 + static_cast<uint64_t>(dtype) * 7 + static_cast<uint64_t>(layout);
  return c;
}

class Fp8GradTest : public ::testing::TestWithParam<DType> {};

TEST_P(Fp8GradTest, EveryPaddedLayoutWithRecomputedResiduals) {
  for (Layout layout :
       {Layout::kBSH, Layout::kSBH, Layout::kBSND, Layout::kBNSD}) {
    CheckBackward(Base(GetParam(), layout), Residuals::kRecomputed);
  }
}

// attention_in is sent in FLOAT8: D_i uses its decoded values.
TEST_P(Fp8GradTest, ReferenceResidualsWithFloat8AttentionIn) {
  CheckBackward(Base(GetParam(), Layout::kBSND), Residuals::kReference);
}

TEST_P(Fp8GradTest, SparseModesAndBands) {
  FeatureConfig band = Base(GetParam(), Layout::kBNSD);
  band.pre_tokens = 7;
  band.next_tokens = -1;
  band.mask = MaskForm::kPerHead;
  CheckBackward(band, Residuals::kRecomputed);
  FeatureConfig causal = Base(GetParam(), Layout::kBSH);
  causal.mask = MaskForm::kNone;
  causal.sparse_mode = 3;
  CheckBackward(causal, Residuals::kReference);
  FeatureConfig prefix = Base(GetParam(), Layout::kSBH);
  prefix.sparse_mode = 5;
  prefix.prefix = {18, 50};
  CheckBackward(prefix, Residuals::kRecomputed);
}

TEST_P(Fp8GradTest, ExternalPseInEachAllowedDtype) {
  for (DType pse_dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    FeatureConfig config = Base(GetParam(), Layout::kBSND);
    config.pse = PseForm::kRow;
    config.pse_type = pse_dtype == DType::kFloat32 ? 0 : 1;
    config.pse_dtype = pse_dtype;
    CheckBackward(config, Residuals::kRecomputed);
  }
}

TEST_P(Fp8GradTest, SlopesAndDropout) {
  FeatureConfig config = Base(GetParam(), Layout::kBNSD);
  config.s1 = config.s2 = 45;
  config.mask = MaskForm::kNone;
  config.pse = PseForm::kSlopesShared;
  config.pse_type = 3;
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.8;
  config.dropout_seed = 12;
  CheckBackward(config, Residuals::kRecomputed);
  config.dropout = DropoutKind::kMask;
  CheckBackward(config, Residuals::kReference);
}

TEST_P(Fp8GradTest, Varlen) {
  FeatureConfig config = Base(GetParam(), Layout::kTND);
  config.n1 = 6;
  config.dv = 24;
  config.mask = MaskForm::kTndPacked;
  config.seq_q = {17, 0, 29, 11};
  config.seq_kv = {23, 14, 19, 0};
  CheckBackward(config, Residuals::kRecomputed);
  CheckBackward(config, Residuals::kReference);
}

INSTANTIATE_TEST_SUITE_P(Float8, Fp8GradTest, ::testing::Values(kE4M3, kE5M2),
                         DTypeParamName);

// ---------------------------------------------------------------------------
// Refusals.

TEST(Fp8RejectTest, ForwardRefusesFloat8) {
  FeatureCase c(Base(kE4M3, Layout::kBSH));
  EXPECT_TRUE(
      IsInvalidOn(core::PlanForward(c.forward_args()).status(), "query.dtype"));
}

TEST(Fp8RejectTest, AllFourInputsShareOneFloat8Dtype) {
  FeatureCase e4(Base(kE4M3, Layout::kBSH));
  FeatureCase e5(Base(kE5M2, Layout::kBSH));
  FeatureCase f16(Base(DType::kFloat16, Layout::kBSH));
  core::BackwardArgs args = e4.backward_args(nullptr);
  args.key = e5.backward_args(nullptr).key;
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(args).status(), "key.dtype"));
  args = e4.backward_args(nullptr);
  args.dy = f16.backward_args(nullptr).dy;
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(args).status(), "dy.dtype"));
  // attention_in in another dtype than the FLOAT8 inputs.
  args = e4.backward_args_with_reference_residuals();
  args.attention_in = f16.backward_args_with_reference_residuals().attention_in;
  EXPECT_TRUE(
      IsInvalidOn(core::PlanBackward(args).status(), "attention_in.dtype"));
}

TEST(Fp8RejectTest, PseDtypeMustBeAComputeDtype) {
  FeatureConfig config = Base(kE5M2, Layout::kBSH);
  config.pse = PseForm::kRow;
  FeatureCase c(config);
  const core::HostTensor fp8_pse = core::MakeHostTensor(kE5M2, {2, 4, 1, 53});
  core::BackwardArgs args = c.backward_args(nullptr);
  args.options.pse = fp8_pse.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(args).status(), "pse"));
}

}  // namespace
}  // namespace attnserve::test
