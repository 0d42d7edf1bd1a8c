// sparse_mode 0-8 against the float64 reference (FLOAT32; the 16-bit dtypes
// are in sparse_mode_grid_test), the causal and band modes against the same
// request sent as mode 0/1 with the equivalent explicit mask, the test-side
// predicate on hand-checked cells, and refusals naming their field.
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/core/sparse_mode_cases.h"
#include "tests/testing/compare.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/sparse_predicate.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;
using sparse_cases::ModeCase;
using sparse_cases::ModeCaseIndices;
using sparse_cases::ModeCases;
using sparse_cases::ModeParam;
using sparse_cases::ModeParamName;
using sparse_cases::Padded;
using sparse_cases::Varlen;

// ---------------------------------------------------------------------------
// The test-side predicate, cell by cell against the mode table.

TEST(SparsePredicateTest, CausalModesOnHandCheckedCells) {
  SparseSpec s;
  s.sq = {3};
  s.skv = {5};  // Δ = 2.
  s.mode = 2;
  EXPECT_TRUE(SparseKeep(s, 0, 1, 1));
  EXPECT_FALSE(SparseKeep(s, 0, 1, 2));
  s.mode = 3;
  EXPECT_TRUE(SparseKeep(s, 0, 0, 2));
  EXPECT_FALSE(SparseKeep(s, 0, 0, 3));
  EXPECT_TRUE(SparseKeep(s, 0, 2, 4));
  s.mode = 4;
  s.pre_tokens = 1;
  s.next_tokens = 0;  // Row 1 keeps j in [2, 3].
  EXPECT_FALSE(SparseKeep(s, 0, 1, 1));
  EXPECT_TRUE(SparseKeep(s, 0, 1, 2));
  EXPECT_TRUE(SparseKeep(s, 0, 1, 3));
  EXPECT_FALSE(SparseKeep(s, 0, 1, 4));
  s.mode = 0;  // Top-left band: row 1 keeps j in [0, 1].
  EXPECT_TRUE(SparseKeep(s, 0, 1, 0));
  EXPECT_FALSE(SparseKeep(s, 0, 1, 2));
  s.mode = 1;
  EXPECT_TRUE(SparseKeep(s, 0, 0, 4));
}

TEST(SparsePredicateTest, PrefixModesKeepThePrefixColumns) {
  SparseSpec s;
  s.sq = {5, 2};
  s.skv = {3, 4};  // Δ = −2 and 2.
  s.prefix = {1, 3};
  for (int64_t mode : {5, 6}) {
    s.mode = mode;
    EXPECT_TRUE(SparseKeep(s, 0, 0, 0));   // j < prefix.
    EXPECT_FALSE(SparseKeep(s, 0, 0, 1));  // j > i + Δ and j >= prefix.
    EXPECT_TRUE(SparseKeep(s, 0, 3, 1));   // j <= i + Δ.
    EXPECT_TRUE(SparseKeep(s, 1, 0, 2));   // j <= 0 + 2.
    EXPECT_FALSE(SparseKeep(s, 1, 0, 3));  // j = 3 = prefix, > i + Δ.
  }
  EXPECT_TRUE(ModeReadsMaskTensor(5));
  EXPECT_FALSE(ModeReadsMaskTensor(6));
}

TEST(SparsePredicateTest, VarlenBandModesPickTheirBandBatch) {
  SparseSpec s;
  s.sq = {0, 2, 3, 0};
  s.skv = {4, 4, 3, 5};
  s.pre_tokens = 10;
  s.next_tokens = -1;
  s.mode = 7;  // Band batch: the last with Sq != 0, b = 2 (Δ = 0).
  EXPECT_EQ(BandBatch(s), 2);
  EXPECT_FALSE(SparseKeep(s, 2, 1, 1));  // j <= i + 0 − 1.
  EXPECT_TRUE(SparseKeep(s, 2, 1, 0));
  EXPECT_TRUE(SparseKeep(s, 1, 0, 2));  // Others: j <= i + Δ (Δ = 2).
  EXPECT_FALSE(SparseKeep(s, 1, 0, 3));
  s.mode = 8;  // Band batch: the first with Sq != 0, b = 1 (Δ = 2).
  EXPECT_EQ(BandBatch(s), 1);
  EXPECT_TRUE(SparseKeep(s, 1, 0, 1));  // j <= 0 + 2 − 1.
  EXPECT_FALSE(SparseKeep(s, 1, 0, 2));
  EXPECT_TRUE(SparseKeep(s, 2, 1, 1));  // Others: j <= i.
  EXPECT_FALSE(SparseKeep(s, 2, 1, 2));
}

TEST(SparsePredicateTest, StandardCompressedMasks) {
  const std::vector<uint8_t> causal = StandardCompressedMask(false);
  ASSERT_EQ(causal.size(), 2048u * 2048u);
  EXPECT_EQ(causal[0 * 2048 + 0], 0);
  EXPECT_EQ(causal[0 * 2048 + 1], 1);
  EXPECT_EQ(causal[5 * 2048 + 5], 0);
  EXPECT_EQ(causal[2047 * 2048 + 2047], 0);
  const std::vector<uint8_t> prefix = StandardCompressedMask(true);
  ASSERT_EQ(prefix.size(), 3072u * 2048u);
  EXPECT_EQ(prefix[10 * 2048 + 11], 1);
  EXPECT_EQ(prefix[2048 * 2048 + 1023], 0);
  EXPECT_EQ(prefix[2048 * 2048 + 1024], 1);
  EXPECT_EQ(prefix[3071 * 2048 + 0], 0);
  EXPECT_EQ(prefix[3071 * 2048 + 2047], 1);
}

// ---------------------------------------------------------------------------
// Every mode against the reference (FLOAT32 here).

class SparseModeTest : public ::testing::TestWithParam<ModeParam> {};

TEST_P(SparseModeTest, BothDirectionsMatchReference) {
  FeatureConfig config = ModeCases()[std::get<0>(GetParam())].config;
  config.dtype = std::get<1>(GetParam());
  CheckBothDirections(config);
}

INSTANTIATE_TEST_SUITE_P(
    Float32, SparseModeTest,
    ::testing::Combine(::testing::ValuesIn(ModeCaseIndices()),
                       ::testing::Values(DType::kFloat32)),
    ModeParamName);

class SparseModeResidualsTest : public ::testing::TestWithParam<ModeParam> {};

TEST_P(SparseModeResidualsTest, BackwardWithoutAndWithReferenceResiduals) {
  FeatureConfig config = ModeCases()[std::get<0>(GetParam())].config;
  config.dtype = std::get<1>(GetParam());
  CheckBackward(config, Residuals::kRecomputed);
  CheckBackward(config, Residuals::kReference);
}

INSTANTIATE_TEST_SUITE_P(
    ComputeDTypes, SparseModeResidualsTest,
    ::testing::Combine(::testing::ValuesIn(ModeCaseIndices()),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)),
    ModeParamName);

// Mode 0 in every padded layout, dtype and mask form (what the kernels
// supported first): the harness against a known-good path.
using LayoutDtype = std::tuple<Layout, DType>;

class SparseModeZeroTest : public ::testing::TestWithParam<LayoutDtype> {};

TEST_P(SparseModeZeroTest, EveryMaskFormWithBandAndHeadGrouping) {
  for (MaskForm mask : {MaskForm::kNone, MaskForm::kFull2D, MaskForm::kShared,
                        MaskForm::kPerBatch, MaskForm::kPerHead}) {
    FeatureConfig config = Padded(std::get<0>(GetParam()), 0);
    config.dtype = std::get<1>(GetParam());
    config.mask = mask;
    config.mask_dtype =
        mask == MaskForm::kShared ? DType::kBool : DType::kUInt8;
    config.pre_tokens = 20;
    config.next_tokens = 6;
    config.n2 = mask == MaskForm::kPerHead ? 1 : 2;  // MQA and GQA.
    config.dv = 24;
    CheckBothDirections(config);
    CheckBackward(config, Residuals::kRecomputed);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Padded, SparseModeZeroTest,
    ::testing::Combine(::testing::Values(Layout::kBSH, Layout::kSBH,
                                         Layout::kBSND, Layout::kBNSD),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)),
    [](const ::testing::TestParamInfo<LayoutDtype>& info) {
      return absl::StrCat(core::LayoutName(std::get<0>(info.param)), "_",
                          core::DTypeName(std::get<1>(info.param)));
    });

// ---------------------------------------------------------------------------
// Modes 2, 3 and 4 equal mode 1 with the explicit mask of their predicate,
// and mode 0 with the equivalent top-left band and an agreeing mask.

// The explicit mask (1 = masked) of `c`'s predicate: [S1, S2] for padded
// layouts (the same for every batch), [T1, T2] for TND (cells outside the
// batch blocks masked).
core::HostTensor ExplicitMask(const FeatureCase& c) {
  if (!c.tnd()) {
    const int64_t s1 = c.config().s1, s2 = c.config().s2;
    std::vector<uint8_t> m(static_cast<size_t>(s1 * s2));
    for (int64_t i = 0; i < s1; ++i) {
      for (int64_t j = 0; j < s2; ++j) {
        m[static_cast<size_t>(i * s2 + j)] = c.Keep(0, 0, i, j) ? 0 : 1;
      }
    }
    return PackBytes(m, {s1, s2}, DType::kUInt8);
  }
  std::vector<uint8_t> m(static_cast<size_t>(c.t1() * c.t2()), 1);
  for (int64_t b = 0; b < c.batches(); ++b) {
    for (int64_t i = 0; i < c.sq(b); ++i) {
      for (int64_t j = 0; j < c.skv(b); ++j) {
        m[static_cast<size_t>((c.q_start(b) + i) * c.t2() + c.kv_start(b) +
                              j)] = c.Keep(b, 0, i, j) ? 0 : 1;
      }
    }
  }
  return PackBytes(m, {c.t1(), c.t2()}, DType::kBool);
}

struct Equivalent {
  int64_t mode;
  int64_t pre;
  int64_t next;
};

// Runs `c` as sent and as `as` with `mask`, checks both against the
// reference and against each other.
void ExpectSameAsExplicit(const FeatureCase& c, const Equivalent& as,
                          const core::HostTensor& mask) {
  SCOPED_TRACE(::testing::Message() << "as mode " << as.mode << " pre "
                                    << as.pre << " next " << as.next);
  const Tolerances tol = FeatureTolerances(c.config());
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult native,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, native, tol);
  core::ForwardArgs args = c.forward_args();
  args.options.sparse_mode = as.mode;
  args.options.pre_tokens = as.pre;
  args.options.next_tokens = as.next;
  args.options.atten_mask = mask.view();
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult explicit_fwd, RunForward(args));
  ExpectForwardMatches(c, explicit_fwd, tol);
  const FeatureConfig& cfg = c.config();
  absl::StatusOr<std::vector<double>> a =
      c.UnpackTensor(native.attention_out, cfg.n1, cfg.dv, true, cfg.dtype);
  absl::StatusOr<std::vector<double>> b = c.UnpackTensor(
      explicit_fwd.attention_out, cfg.n1, cfg.dv, true, cfg.dtype);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(AllClose("attention_out native vs explicit", *a, *b, tol.out));

  core::BackwardArgs grad_args = c.backward_args(&native);
  grad_args.options = args.options;
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad, RunBackward(grad_args));
  ExpectBackwardMatches(c, grad, tol, Residuals::kKernelForward);
}

class SparseEquivalenceTest : public ::testing::TestWithParam<DType> {};

TEST_P(SparseEquivalenceTest, Mode2EqualsExplicitMasks) {
  FeatureConfig config = Padded(Layout::kBSND, 2);
  config.dtype = GetParam();
  FeatureCase c(config);
  const core::HostTensor mask = ExplicitMask(c);
  ExpectSameAsExplicit(c, {1, 0, 0}, mask);
  ExpectSameAsExplicit(c, {0, core::kDefaultWindowTokens, 0}, mask);
}

TEST_P(SparseEquivalenceTest, Mode3EqualsExplicitMasks) {
  FeatureConfig config = Padded(Layout::kBNSD, 3);  // Δ = 16.
  config.dtype = GetParam();
  FeatureCase c(config);
  const core::HostTensor mask = ExplicitMask(c);
  ExpectSameAsExplicit(c, {1, 0, 0}, mask);
  ExpectSameAsExplicit(c, {0, core::kDefaultWindowTokens, 16}, mask);
  FeatureConfig longer = Padded(Layout::kBSH, 3, 53, 37);
  longer.dtype = GetParam();
  FeatureCase c2(longer);
  ExpectSameAsExplicit(c2, {1, 0, 0}, ExplicitMask(c2));
}

TEST_P(SparseEquivalenceTest, Mode4EqualsExplicitMasks) {
  FeatureConfig config = Padded(Layout::kSBH, 4);  // Δ = 16.
  config.pre_tokens = 8;
  config.next_tokens = 3;
  config.dtype = GetParam();
  FeatureCase c(config);
  const core::HostTensor mask = ExplicitMask(c);
  ExpectSameAsExplicit(c, {1, 0, 0}, mask);
  // Top-left band i − (8 − 16) <= j <= i + (3 + 16).
  ExpectSameAsExplicit(c, {0, -8, 19}, mask);
}

TEST_P(SparseEquivalenceTest, VarlenModesEqualPackedExplicitMask) {
  for (int64_t mode : {2, 3, 4}) {
    FeatureConfig config = Varlen(mode, {20, 0, 31}, {25, 13, 40});
    config.pre_tokens = mode == 4 ? 6 : core::kDefaultWindowTokens;
    config.next_tokens = mode == 4 ? 1 : core::kDefaultWindowTokens;
    config.dtype = GetParam();
    SCOPED_TRACE(mode);
    FeatureCase c(config);
    ExpectSameAsExplicit(c, {1, 0, 0}, ExplicitMask(c));
  }
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, SparseEquivalenceTest, ComputeDTypes(),
                         DTypeParamName);

// ---------------------------------------------------------------------------
// Refusals, matched by field prefix.

// INVALID_ARGUMENT on a field starting with any of `prefixes`.
::testing::AssertionResult IsInvalidOnAny(
    const absl::Status& status, const std::vector<std::string>& prefixes) {
  std::string tried;
  for (const std::string& p : prefixes) {
    if (IsInvalidOn(status, p)) return ::testing::AssertionSuccess();
    tried += " " + p;
  }
  return ::testing::AssertionFailure() << "expected INVALID_ARGUMENT on one of"
                                       << tried << ", got " << status;
}

TEST(SparseModeRejectTest, CompressedMaskWithOtherContents) {
  FeatureConfig config = Padded(Layout::kBSH, 2);
  config.mask = MaskForm::kCompressed;
  FeatureCase c(config);
  std::vector<uint8_t> bad = StandardCompressedMask(false);
  bad[3 * 2048 + 1] = 1;  // Below the diagonal.
  const core::HostTensor mask = PackBytes(bad, {2048, 2048}, DType::kUInt8);
  core::ForwardArgs args = c.forward_args();
  args.options.atten_mask = mask.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
  core::BackwardArgs grad = c.backward_args(nullptr);
  grad.options.atten_mask = mask.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "atten_mask"));
}

TEST(SparseModeRejectTest, CompressedMaskOfWrongShape) {
  FeatureConfig config = Padded(Layout::kBNSD, 3);
  FeatureCase c(config);
  const core::HostTensor small =
      PackBytes(std::vector<uint8_t>(static_cast<size_t>(37 * 53), 0), {37, 53},
                DType::kUInt8);
  core::ForwardArgs args = c.forward_args();
  args.options.atten_mask = small.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
  // Mode 6 needs [3072, 2048]; the causal [2048, 2048] is not enough.
  FeatureConfig prefix = Padded(Layout::kBNSD, 6);
  prefix.prefix = {16, 30};
  FeatureCase c6(prefix);
  const core::HostTensor causal =
      PackBytes(StandardCompressedMask(false), {2048, 2048}, DType::kUInt8);
  args = c6.forward_args();
  args.options.atten_mask = causal.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
}

TEST(SparseModeRejectTest, AllMaskAndPrefixModesRequireTheirMask) {
  FeatureConfig config = Padded(Layout::kBSND, 1);
  config.mask = MaskForm::kPerBatch;
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.atten_mask.reset();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));

  FeatureConfig five = Padded(Layout::kBSND, 5);
  five.mask = MaskForm::kPerBatch;
  five.prefix = {20, 40};
  FeatureCase c5(five);
  args = c5.forward_args();
  args.options.atten_mask.reset();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
  // Mode 5 accepts only [B,N1,Sq,Skv] and [B,1,Sq,Skv].
  const core::HostTensor flat =
      PackBytes(std::vector<uint8_t>(static_cast<size_t>(37 * 53), 0), {37, 53},
                DType::kUInt8);
  args.options.atten_mask = flat.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
}

TEST(SparseModeRejectTest, PrefixMissingOrOutOfRange) {
  FeatureConfig config = Padded(Layout::kBSH, 6);
  config.prefix = {16, 45};
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.prefix.clear();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "prefix"));
  args.options.prefix = {16};  // Length != B.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "prefix"));
  args.options.prefix = {16, 15};  // Sq <= Skv: prefix >= Skv − Sq = 16.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "prefix"));
  args.options.prefix = {16, 54};  // > Skv.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "prefix"));
}

TEST(SparseModeRejectTest, BandOfModeFourMustBeNonEmpty) {
  FeatureConfig config = Padded(Layout::kBNSD, 4);
  config.pre_tokens = 8;
  config.next_tokens = 3;
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.pre_tokens = 2;
  args.options.next_tokens = -5;  // next < 0 needs pre >= 5.
  EXPECT_TRUE(IsInvalidOnAny(core::PlanForward(args).status(),
                             {"pre_tokens", "next_tokens"}));
  args.options.pre_tokens = -6;
  args.options.next_tokens = 4;  // pre < 0 needs next >= 6.
  EXPECT_TRUE(IsInvalidOnAny(core::PlanForward(args).status(),
                             {"pre_tokens", "next_tokens"}));
}

TEST(SparseModeRejectTest, VarlenBandModesCheckTheirBandBatch) {
  FeatureConfig seven = Varlen(7, {20, 31, 0}, {25, 40, 13});
  seven.pre_tokens = 40;
  seven.next_tokens = -4;
  FeatureCase c7(seven);
  core::ForwardArgs args = c7.forward_args();
  args.options.next_tokens = 1;  // Mode 7: next <= 0.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "next_tokens"));
  args.options.next_tokens = -10;  // >= Sq_band − Skv_band = −9.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "next_tokens"));
  args.options.next_tokens = -4;
  args.options.pre_tokens = 39;  // >= Skv_band = 40.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pre_tokens"));

  FeatureConfig eight = Varlen(8, {0, 23, 17}, {9, 30, 17});
  eight.pre_tokens = 30;
  eight.next_tokens = -3;
  FeatureCase c8(eight);
  args = c8.forward_args();
  args.options.next_tokens = -8;  // >= Sq_band − Skv_band = −7.
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "next_tokens"));
}

TEST(SparseModeRejectTest, VarlenOnlyModesInPaddedLayoutsAndBack) {
  // Modes 7 and 8 are TND only; mode 5 is padded only. The conventions do
  // not name the field: the mode or the layout.
  for (int64_t mode : {7, 8}) {
    FeatureConfig config = Padded(Layout::kBSH, 2);
    FeatureCase c(config);
    core::ForwardArgs args = c.forward_args();
    args.options.sparse_mode = mode;
    args.options.pre_tokens = 53;
    args.options.next_tokens = 0;
    EXPECT_TRUE(IsInvalidOnAny(core::PlanForward(args).status(),
                               {"sparse_mode", "input_layout"}))
        << mode;
  }
  FeatureConfig config = Varlen(1, {20, 9, 31}, {25, 0, 17});
  config.mask = MaskForm::kTndPacked;
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.sparse_mode = 5;
  args.options.prefix = {25, 0, 17};
  EXPECT_TRUE(IsInvalidOnAny(core::PlanForward(args).status(),
                             {"sparse_mode", "input_layout"}));
}

TEST(SparseModeRejectTest, VarlenMaskFormsOnlyForModesZeroAndOne) {
  FeatureConfig config = Varlen(2, {20, 31, 9}, {25, 17, 40});
  FeatureCase c(config);
  const core::HostTensor packed = ExplicitMask(c);  // [T1, T2].
  core::ForwardArgs args = c.forward_args();
  args.options.atten_mask = packed.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
}

TEST(SparseModeRejectTest, RightDownCausalVarlenNeedsKeysAtLeastQueries) {
  FeatureConfig config = Varlen(2, {20, 31, 9}, {25, 17, 40});
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.sparse_mode = 3;  // Batch 1 has Sq 31 > Skv 17.
  EXPECT_TRUE(
      IsInvalidOnAny(core::PlanForward(args).status(),
                     {"actual_seq_qlen", "actual_seq_kvlen", "sparse_mode"}));
}

}  // namespace
}  // namespace attnserve::test
