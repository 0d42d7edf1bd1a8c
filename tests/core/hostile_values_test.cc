// Values at the edges of their wire types, which must give the right answer
// or a refusal naming the field, never a wrong answer with OK:
// pre_tokens / next_tokens at INT64_MIN / INT64_MAX in every sparse mode
// (against the float64 reference, with Skv > Sq), keep_prob and scale_value
// beyond float32, reserved inputs, and non-finite or non-positive softmax
// statistics sent to the grads.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/core/sparse_mode_cases.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;
using sparse_cases::Padded;
using sparse_cases::Varlen;

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

FeatureConfig WithWindow(FeatureConfig c, int64_t pre, int64_t next) {
  c.pre_tokens = pre;
  c.next_tokens = next;
  return c;
}

// ---------------------------------------------------------------------------
// pre_tokens / next_tokens at the int64 extremes, every mode, Skv > Sq.

// Modes 0 and 4 (padded, Sq=37 < Skv=53, and TND with Skv_b > Sq_b):
// unbounded sides, one-sided bands, and bands that lie wholly outside the
// matrix (every row the invalid-line result).
TEST(WindowExtremesTest, BandModesMatchReference) {
  const std::vector<std::pair<int64_t, int64_t>> windows = {
      {kMax, kMax}, {kMax, 0}, {0, kMax}, {5, kMax}, {kMax, -3}};
  for (int64_t mode : {0, 4}) {
    for (const auto& [pre, next] : windows) {
      SCOPED_TRACE(absl::StrCat("mode ", mode, " pre ", pre, " next ", next));
      CheckBothDirections(WithWindow(Padded(Layout::kBSND, mode), pre, next));
      CheckBothDirections(
          WithWindow(Varlen(mode, {20, 31}, {25, 40}), pre, next));
    }
  }
  // Mode 4: a band that starts past every key or ends before the first.
  CheckBothDirections(WithWindow(Padded(Layout::kBNSD, 4), kMin, kMax));
  CheckBothDirections(WithWindow(Padded(Layout::kBNSD, 4), kMax, kMin));
  // TND mode 0 has no "reaches the matrix" rule: the same empty bands.
  CheckBothDirections(WithWindow(Varlen(0, {20, 31}, {25, 40}), kMin, kMax));
}

// Modes 7 and 8 widen the band batch by next_tokens: INT64_MAX on mode 8
// (which allows next > 0) with Skv > Sq; INT64_MAX pre_tokens on both.
TEST(WindowExtremesTest, VarlenBandBatchModesMatchReference) {
  CheckBothDirections(
      WithWindow(Varlen(8, {0, 23, 17}, {9, 30, 25}), kMax, kMax));
  CheckBothDirections(WithWindow(Varlen(8, {0, 23, 17}, {9, 30, 25}), kMax, 0));
  CheckBothDirections(
      WithWindow(Varlen(7, {20, 31, 0}, {25, 40, 13}), kMax, -4));
  CheckBothDirections(
      WithWindow(Varlen(7, {20, 31, 0}, {25, 40, 13}), kMax, 0));
}

// Modes that ignore the window ignore its extremes too.
TEST(WindowExtremesTest, ModesWithoutWindowIgnoreExtremes) {
  for (const auto& [pre, next] : std::vector<std::pair<int64_t, int64_t>>{
           {kMin, kMin}, {kMax, kMin}, {kMin, kMax}}) {
    SCOPED_TRACE(absl::StrCat("pre ", pre, " next ", next));
    FeatureConfig m1 = Padded(Layout::kBSH, 1);
    m1.mask = MaskForm::kShared;
    CheckBothDirections(WithWindow(m1, pre, next));
    CheckBothDirections(WithWindow(Padded(Layout::kBSH, 2), pre, next));
    CheckBothDirections(WithWindow(Padded(Layout::kBSND, 3), pre, next));
    FeatureConfig m5 = Padded(Layout::kBSND, 5);
    m5.mask = MaskForm::kPerBatch;
    m5.prefix = {20, 40};
    CheckBothDirections(WithWindow(m5, pre, next));
    FeatureConfig m6 = Padded(Layout::kBSH, 6);
    m6.prefix = {16, 45};
    CheckBothDirections(WithWindow(m6, pre, next));
  }
}

// Extremes that make the band empty where the mode forbids that are refused
// on the field, not computed.
TEST(WindowExtremesTest, EmptyBandsAreRefusedOnTheirField) {
  const auto refused = [](const FeatureConfig& config,
                          const std::string& field) {
    FeatureCase c(config);
    EXPECT_TRUE(
        IsInvalidOn(core::PlanForward(c.forward_args()).status(), field));
    EXPECT_TRUE(IsInvalidOn(
        core::PlanBackward(c.backward_args(nullptr)).status(), field));
  };
  // Mode 0, padded: the band must reach the matrix.
  refused(WithWindow(Padded(Layout::kBSH, 0), kMin, kMax), "pre_tokens");
  refused(WithWindow(Padded(Layout::kBSH, 0), kMax, kMin), "next_tokens");
  // next < 0 needs pre >= -next (and the other way round).
  refused(WithWindow(Padded(Layout::kBSH, 0), 5, kMin), "pre_tokens");
  refused(WithWindow(Padded(Layout::kBSH, 4), kMin, 5), "next_tokens");
  refused(WithWindow(Padded(Layout::kBSH, 4), kMin, kMin), "pre_tokens");
  // Modes 7 / 8: pre >= Skv and next >= Sq - Skv of the band batch.
  refused(WithWindow(Varlen(7, {20, 31, 0}, {25, 40, 13}), kMin, 0),
          "pre_tokens");
  refused(WithWindow(Varlen(7, {20, 31, 0}, {25, 40, 13}), kMax, kMin),
          "next_tokens");
  refused(WithWindow(Varlen(8, {0, 23, 17}, {9, 30, 25}), kMax, kMin),
          "next_tokens");
}

// ---------------------------------------------------------------------------
// Scalars beyond float32.

TEST(ScalarRangeTest, KeepProbThatVanishesAsFloat32IsRefused) {
  for (double keep : {1e-46, 1.4e-45, 1e-40, 1.1e-38}) {
    SCOPED_TRACE(keep);
    FeatureCase c(Padded(Layout::kBSH, 0));
    core::ForwardArgs args = c.forward_args();
    args.options.keep_prob = keep;
    args.options.seed = 7;
    EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "keep_prob"));
    core::BackwardArgs grad = c.backward_args(nullptr);
    grad.options.keep_prob = keep;
    grad.options.seed = 7;
    EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "keep_prob"));
  }
  // The smallest accepted value: 1/keep_prob is finite in float32.
  FeatureCase c(Padded(Layout::kBSH, 0));
  core::ForwardArgs args = c.forward_args();
  args.options.keep_prob = FLT_MIN;
  args.options.seed = 7;
  ATTN_EXPECT_OK(core::PlanForward(args).status());
  ASSERT_TRUE(std::isfinite(1.0f / static_cast<float>(FLT_MIN)));
}

TEST(ScalarRangeTest, ScaleBeyondFloat32IsRefused) {
  FeatureCase c(Padded(Layout::kBSH, 0));
  for (double scale : {1e39, -1e39, 3.5e38, static_cast<double>(FLT_MAX) * 1.5,
                       std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(scale);
    core::ForwardArgs args = c.forward_args();
    args.options.scale_value = scale;
    EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "scale_value"));
    core::BackwardArgs grad = c.backward_args(nullptr);
    grad.options.scale_value = scale;
    EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "scale_value"));
  }
  core::ForwardArgs args = c.forward_args();
  args.options.scale_value = FLT_MAX;
  ATTN_EXPECT_OK(core::PlanForward(args).status());
  args.options.scale_value = -FLT_MAX;
  ATTN_EXPECT_OK(core::PlanForward(args).status());
}

TEST(ScalarRangeTest, NsaScaleBeyondFloat32IsRefused) {
  NsaCaseConfig config;
  config.seq_q = {20};
  config.seq_kv = {64};
  NsaCase c(config);
  core::NsaForwardArgs args = c.forward_args();
  args.options.scale_value = 1e39;
  EXPECT_TRUE(IsInvalidOn(core::PlanNsaForward(args).status(), "scale_value"));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunNsaForward(c.forward_args()));
  core::NsaBackwardArgs grad = c.backward_args(fwd);
  grad.options.scale_value = -1e39;
  EXPECT_TRUE(IsInvalidOn(core::PlanNsaBackward(grad).status(), "scale_value"));
}

// ---------------------------------------------------------------------------
// Reserved inputs: refused, not ignored.

TEST(ReservedInputTest, PaddingMaskAndSoftmaxInAreRefused) {
  for (const FeatureConfig& config :
       {Padded(Layout::kBNSD, 0), Varlen(0, {20, 31}, {25, 40})}) {
    SCOPED_TRACE(FeatureCaseName(config));
    FeatureCase c(config);
    const core::HostTensor reserved =
        PackBytes(std::vector<uint8_t>(4, 0), {4}, DType::kUInt8);
    core::ForwardArgs args = c.forward_args();
    args.options.padding_mask = reserved.view();
    EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "padding_mask"));
    core::BackwardArgs grad = c.backward_args(nullptr);
    grad.options.padding_mask = reserved.view();
    EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "padding_mask"));
    grad = c.backward_args_with_reference_residuals();
    grad.softmax_in = reserved.view();
    EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "softmax_in"));
    grad = c.backward_args(nullptr);
    grad.softmax_in = reserved.view();
    EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "softmax_in"));
  }
}

// ---------------------------------------------------------------------------
// Softmax statistics sent to the grads.

// A copy of a FLOAT32 tensor with element `index` set to `value`.
struct PokedFloats {
  std::vector<float> values;
  core::TensorView view;
};

PokedFloats Poke(const core::TensorView& t, int64_t index, float value) {
  PokedFloats p;
  p.values.resize(t.size_bytes / sizeof(float));
  std::memcpy(p.values.data(), t.data, t.size_bytes);
  p.values[static_cast<size_t>(index)] = value;
  p.view = t;
  p.view.data = p.values.data();
  return p;
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(SoftmaxStatisticsTest, NonFiniteOrNonPositiveStatisticsAreRefused) {
  for (const FeatureConfig& config :
       {Padded(Layout::kBSH, 0), Varlen(0, {20, 31}, {25, 40})}) {
    SCOPED_TRACE(FeatureCaseName(config));
    FeatureCase c(config);
    const core::BackwardArgs good = c.backward_args_with_reference_residuals();
    ATTN_EXPECT_OK(core::PlanBackward(good).status());
    const int64_t last =
        static_cast<int64_t>(good.softmax_sum->size_bytes / 4) - 1;
    for (float bad : {0.0f, -0.0f, -1.0f, kNaN, kInf, -kInf}) {
      SCOPED_TRACE(bad);
      core::BackwardArgs args = good;
      const PokedFloats sum = Poke(*good.softmax_sum, last, bad);
      args.softmax_sum = sum.view;
      EXPECT_TRUE(
          IsInvalidOn(core::PlanBackward(args).status(), "softmax_sum"));
    }
    for (float bad : {kNaN, kInf, -kInf}) {
      SCOPED_TRACE(bad);
      core::BackwardArgs args = good;
      const PokedFloats max = Poke(*good.softmax_max, 3, bad);
      args.softmax_max = max.view;
      EXPECT_TRUE(
          IsInvalidOn(core::PlanBackward(args).status(), "softmax_max"));
    }
    // The invalid-line statistics of a fully masked row stay accepted.
    core::BackwardArgs args = good;
    const PokedFloats max = Poke(*good.softmax_max, 0, -FLT_MAX);
    const PokedFloats sum = Poke(*good.softmax_sum, 0, FLT_MAX);
    args.softmax_max = max.view;
    args.softmax_sum = sum.view;
    ATTN_EXPECT_OK(core::PlanBackward(args).status());
  }
}

TEST(SoftmaxStatisticsTest, NsaGradRefusesBadStatistics) {
  NsaCaseConfig config;
  config.seq_q = {20};
  config.seq_kv = {64};
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunNsaForward(c.forward_args()));
  const core::NsaBackwardArgs good = c.backward_args(fwd);
  ATTN_EXPECT_OK(core::PlanNsaBackward(good).status());
  for (float bad : {0.0f, -2.0f, kNaN, kInf}) {
    SCOPED_TRACE(bad);
    core::NsaBackwardArgs args = good;
    const PokedFloats sum = Poke(good.softmax_sum, 5, bad);
    args.softmax_sum = sum.view;
    EXPECT_TRUE(
        IsInvalidOn(core::PlanNsaBackward(args).status(), "softmax_sum"));
  }
  for (float bad : {kNaN, -kInf}) {
    SCOPED_TRACE(bad);
    core::NsaBackwardArgs args = good;
    const PokedFloats max = Poke(good.softmax_max, 9, bad);
    args.softmax_max = max.view;
    EXPECT_TRUE(
        IsInvalidOn(core::PlanNsaBackward(args).status(), "softmax_max"));
  }
}

}  // namespace
}  // namespace attnserve::test
