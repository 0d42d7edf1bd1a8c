#include "tests/testing/attention_case.h"

#include <cfloat>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testing/compare.h"

namespace attnserve::test {
namespace {

std::vector<int64_t> MaskShape(MaskKind kind, const RefDims& d) {
  switch (kind) {
    case MaskKind::kNone:
      return {};
    case MaskKind::kFull2D:
      return {d.s1, d.s2};
    case MaskKind::kShared:
      return {1, 1, d.s1, d.s2};
    case MaskKind::kPerBatch:
      return {d.b, 1, d.s1, d.s2};
    case MaskKind::kPerHead:
      return {d.b, d.n1, d.s1, d.s2};
  }
  return {};
}

// Random cells, then whole rows and columns, then everything outside the
// band (a mode-0 mask must agree with its band), then the masked batch.
std::vector<uint8_t> MakeMask(const CaseConfig& c,
                              const std::vector<int64_t>& shape) {
  const RefDims& d = c.dims;
  const int64_t planes = shape.size() == 4 ? shape[0] * shape[1] : 1;
  const int64_t heads_in_mask = shape.size() == 4 ? shape[1] : 1;
  std::vector<uint8_t> mask(static_cast<size_t>(planes * d.s1 * d.s2));
  std::mt19937_64 gen(c.seed * 8 + 5);
  auto uniform = [&gen] { return static_cast<double>(gen() >> 11) * 0x1p-53; };
  for (int64_t p = 0; p < planes; ++p) {
    uint8_t* plane = &mask[static_cast<size_t>(p * d.s1 * d.s2)];
    for (int64_t x = 0; x < d.s1 * d.s2; ++x) {
      plane[x] = uniform() < c.masked_fraction ? 1 : 0;
    }
    for (int r = 0; r < c.fully_masked_rows && r < d.s1; ++r) {
      const int64_t i =
          static_cast<int64_t>(gen() % static_cast<uint64_t>(d.s1));
      for (int64_t j = 0; j < d.s2; ++j) plane[i * d.s2 + j] = 1;
    }
    for (int r = 0; r < c.fully_masked_cols && r < d.s2; ++r) {
      const int64_t j =
          static_cast<int64_t>(gen() % static_cast<uint64_t>(d.s2));
      for (int64_t i = 0; i < d.s1; ++i) plane[i * d.s2 + j] = 1;
    }
    for (int64_t i = 0; i < d.s1; ++i) {
      for (int64_t j = 0; j < d.s2; ++j) {
        if (j < i - c.pre_tokens || j > i + c.next_tokens) {
          plane[i * d.s2 + j] = 1;
        }
      }
    }
    const int64_t batch =
        shape.size() == 4 && shape[0] > 1 ? p / heads_in_mask : -1;
    if (c.fully_masked_batch >= 0 && batch == c.fully_masked_batch) {
      std::fill(plane, plane + d.s1 * d.s2, 1);
    }
  }
  return mask;
}

// Checks every lane of a row-major [rows][8] softmax statistic against the
// per-row reference: fully masked rows must hold `masked_value` exactly,
// others be within rel_tol (of the entry, or of the largest valid |ref|).
// The failure names the first offending entry.
::testing::AssertionResult StatMatches(const std::string& what,
                                       const std::vector<double>& got,
                                       const std::vector<double>& ref,
                                       const std::vector<bool>& fully_masked,
                                       double masked_value, double rel_tol,
                                       bool elementwise,
                                       const std::vector<int64_t>& dims) {
  if (got.size() != ref.size() * 8) {
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " values, expected "
           << ref.size() * 8;
  }
  double max_ref = 0;
  for (size_t r = 0; r < ref.size(); ++r) {
    if (!fully_masked[r]) max_ref = std::max(max_ref, std::fabs(ref[r]));
  }
  for (size_t r = 0; r < ref.size(); ++r) {
    for (size_t lane = 0; lane < 8; ++lane) {
      const double g = got[r * 8 + lane];
      std::vector<int64_t> lane_dims = dims;
      lane_dims.push_back(8);
      if (fully_masked[r]) {
        if (g != masked_value) {
          return ::testing::AssertionFailure()
                 << what << FormatIndex(r * 8 + lane, lane_dims)
                 << " of a fully masked row is " << g << ", expected "
                 << masked_value;
        }
        continue;
      }
      const double limit =
          rel_tol * (elementwise ? std::fabs(ref[r]) : max_ref);
      if (!(std::fabs(g - ref[r]) <= limit)) {
        return ::testing::AssertionFailure()
               << what << FormatIndex(r * 8 + lane, lane_dims) << " is " << g
               << ", reference " << ref[r] << ": |diff| "
               << std::fabs(g - ref[r]) << " > " << limit << " (rel tol "
               << rel_tol << (elementwise ? " of the entry" : " of max|ref|")
               << ")";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

std::string MaskKindName(MaskKind kind) {
  switch (kind) {
    case MaskKind::kNone:
      return "NoMask";
    case MaskKind::kFull2D:
      return "Mask2D";
    case MaskKind::kShared:
      return "Mask11SS";
    case MaskKind::kPerBatch:
      return "MaskB1SS";
    case MaskKind::kPerHead:
      return "MaskBNSS";
  }
  return "?";
}

std::string CaseName(const CaseConfig& c) {
  return absl::StrCat(core::LayoutName(c.layout), "_", core::DTypeName(c.dtype),
                      "_n", c.dims.n1, "x", c.dims.n2, "_",
                      MaskKindName(c.mask));
}

AttentionCase::AttentionCase(const CaseConfig& config) : config_(config) {
  const RefDims& d = config_.dims;
  scale_ = static_cast<float>(config_.scale.has_value()
                                  ? *config_.scale
                                  : 1.0 / std::sqrt(static_cast<double>(d.d)));
  problem_.dims = d;
  problem_.scale = scale_;
  const uint64_t s = config_.seed * 8;
  const double qk = config_.qk_range, vr = config_.v_range;
  problem_.q =
      RoundToDType(RandomUniform(d.q_size(), s + 1, -qk, qk), config_.dtype);
  problem_.k =
      RoundToDType(RandomUniform(d.k_size(), s + 2, -qk, qk), config_.dtype);
  problem_.v =
      RoundToDType(RandomUniform(d.v_size(), s + 3, -vr, vr), config_.dtype);
  dy_ =
      RoundToDType(RandomUniform(d.out_size(), s + 4, -vr, vr), config_.dtype);
  q_ = PackBnsd(problem_.q, q_dims(), config_.layout, config_.dtype);
  k_ = PackBnsd(problem_.k, k_dims(), config_.layout, config_.dtype);
  v_ = PackBnsd(problem_.v, v_dims(), config_.layout, config_.dtype);
  dy_tensor_ = PackBnsd(dy_, out_dims(), config_.layout, config_.dtype);

  RefMask ref_mask;
  ref_mask.pre_tokens = config_.pre_tokens;
  ref_mask.next_tokens = config_.next_tokens;
  if (config_.mask != MaskKind::kNone) {
    ref_mask.shape = MaskShape(config_.mask, d);
    ref_mask.values = MakeMask(config_, ref_mask.shape);
    const core::DType mask_dtype = config_.mask_dtype.value_or(
        config_.mask == MaskKind::kFull2D || config_.mask == MaskKind::kPerHead
            ? core::DType::kUInt8
            : core::DType::kBool);
    mask_ = PackBytes(ref_mask.values, ref_mask.shape, mask_dtype);
  }
  problem_.keep = MakeKeepFn(d, ref_mask);

  ref_forward_ = ReferenceForward(problem_);
  ref_backward_ = ReferenceBackward(problem_, dy_);
  ref_max_ = PackSoftmaxStat(ref_forward_.softmax_max, d.b, d.n1, d.s1);
  ref_sum_ = PackSoftmaxStat(ref_forward_.softmax_sum, d.b, d.n1, d.s1);
  ref_out_ =
      PackBnsd(ref_forward_.out, out_dims(), config_.layout, config_.dtype);
}

Bnsd AttentionCase::q_dims() const {
  const RefDims& d = problem_.dims;
  return Bnsd{d.b, d.n1, d.s1, d.d};
}
Bnsd AttentionCase::k_dims() const {
  const RefDims& d = problem_.dims;
  return Bnsd{d.b, d.n2, d.s2, d.d};
}
Bnsd AttentionCase::v_dims() const {
  const RefDims& d = problem_.dims;
  return Bnsd{d.b, d.n2, d.s2, d.dv};
}
Bnsd AttentionCase::out_dims() const {
  const RefDims& d = problem_.dims;
  return Bnsd{d.b, d.n1, d.s1, d.dv};
}

core::AttentionOptions AttentionCase::options() const {
  core::AttentionOptions o;
  o.head_num = problem_.dims.n1;
  o.input_layout = std::string(core::LayoutName(config_.layout));
  o.scale_value = static_cast<double>(scale_);
  o.pre_tokens = config_.pre_tokens;
  o.next_tokens = config_.next_tokens;
  if (mask_.has_value()) o.atten_mask = mask_->view();
  return o;
}

core::ForwardArgs AttentionCase::forward_args() const {
  core::ForwardArgs args;
  args.query = q_.view();
  args.key = k_.view();
  args.value = v_.view();
  args.options = options();
  return args;
}

core::BackwardArgs AttentionCase::backward_args(
    const core::ForwardResult* fwd) const {
  core::BackwardArgs args;
  args.query = q_.view();
  args.key = k_.view();
  args.value = v_.view();
  args.dy = dy_tensor_.view();
  if (fwd != nullptr) {
    args.softmax_max = fwd->softmax_max.view();
    args.softmax_sum = fwd->softmax_sum.view();
    args.attention_in = fwd->attention_out.view();
  }
  args.options = options();
  return args;
}

core::BackwardArgs AttentionCase::backward_args_with_reference_residuals()
    const {
  core::BackwardArgs args = backward_args(nullptr);
  args.softmax_max = ref_max_.view();
  args.softmax_sum = ref_sum_.view();
  args.attention_in = ref_out_.view();
  return args;
}

// Tolerances. u is the unit roundoff of the dtype: 2^-24 (FLOAT32), 2^-11
// (FLOAT16), 2^-8 (BFLOAT16). Inputs are exactly representable (the
// reference sees the rounded values), so the errors come from the kernel:
//  - attention_out is stored in the dtype (<= u * |out|), and for 16-bit
//    dtypes the unnormalized probabilities are rounded to the dtype before
//    P.V (<= u * max|v| per row, max|v| = 1 ~ max|out| here): <= ~2u of
//    max|ref| in the worst case, allowed 4u. FLOAT32 is bounded by the fp32
//    accumulation over S2 + D terms (~100 u = 6e-6): allowed 1e-5.
//  - softmax_max/sum are fp32 computations on exact products (fp16 and bf16
//    products are exact in fp32) for every dtype: q.k over D terms and
//    sum(exp) over S2 terms, each <= ~60 u_fp32 = 4e-6: allowed 1e-5, sum
//    judged entry by entry (it is >= 1 on any valid row).
//  - dq/dk/dv: stored in the dtype (u), plus the rounded attention_in in
//    D_i = dy.out and, for 16-bit dtypes, P and dS rounded to the dtype
//    before the gradient GEMMs; with random signs these add up to ~u-2u of
//    max|ref|: allowed 4u. FLOAT32: the same fp32 accumulation bound as the
//    output, 1e-5.
// Measured on the forward/backward grid (all 180 points): FLOAT32 out 8e-7,
// grads 6e-7; FLOAT16 out 0.8u, grads 1.2u; BFLOAT16 out 0.9u, grads 1.0u;
// softmax_max/sum <= 1.5e-6 for every dtype.
Tolerances TolerancesFor(core::DType dtype) {
  switch (dtype) {
    case core::DType::kFloat16: {
      const double u = 0x1p-11;
      return Tolerances{4 * u, 1e-5, 1e-5, 4 * u};
    }
    case core::DType::kBFloat16: {
      const double u = 0x1p-8;
      return Tolerances{4 * u, 1e-5, 1e-5, 4 * u};
    }
    default:
      return Tolerances{1e-5, 1e-5, 1e-5, 1e-5};
  }
}

absl::StatusOr<core::ForwardResult> RunForward(const core::ForwardArgs& args,
                                               int threads) {
  ATTN_ASSIGN_OR_RETURN(core::ForwardCall call,
                        core::ForwardCall::Prepare(args, threads));
  core::EngineOptions options;
  options.intra_op_threads = threads;
  core::Engine engine(options);
  core::CancelToken token;
  return engine.Run(call, token);
}

absl::StatusOr<core::BackwardResult> RunBackward(const core::BackwardArgs& args,
                                                 int threads) {
  ATTN_ASSIGN_OR_RETURN(core::BackwardCall call,
                        core::BackwardCall::Prepare(args, threads));
  core::EngineOptions options;
  options.intra_op_threads = threads;
  core::Engine engine(options);
  core::CancelToken token;
  return engine.Run(call, token);
}

void ExpectForwardMatches(const AttentionCase& c,
                          const core::ForwardResult& got,
                          const Tolerances& tol) {
  const RefDims& d = c.dims();
  const RefForward& ref = c.reference_forward();
  absl::StatusOr<std::vector<double>> out = UnpackBnsd(
      got.attention_out, c.out_dims(), c.config().layout, c.config().dtype);
  ASSERT_TRUE(out.ok()) << "attention_out: " << out.status();
  EXPECT_TRUE(AllClose("attention_out", *out, ref.out, tol.out,
                       {d.b, d.n1, d.s1, d.dv}, ref.fully_masked));
  const std::vector<int64_t> stat_shape = {d.b, d.n1, d.s1, 8};
  absl::StatusOr<std::vector<double>> max =
      UnpackFlat(got.softmax_max, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(max.ok()) << "softmax_max: " << max.status();
  absl::StatusOr<std::vector<double>> sum =
      UnpackFlat(got.softmax_sum, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(sum.ok()) << "softmax_sum: " << sum.status();
  EXPECT_TRUE(StatMatches("softmax_max", *max, ref.softmax_max,
                          ref.fully_masked, -static_cast<double>(FLT_MAX),
                          tol.softmax_max, /*elementwise=*/false,
                          {d.b, d.n1, d.s1}));
  EXPECT_TRUE(StatMatches("softmax_sum", *sum, ref.softmax_sum,
                          ref.fully_masked, static_cast<double>(FLT_MAX),
                          tol.softmax_sum, /*elementwise=*/true,
                          {d.b, d.n1, d.s1}));
}

void ExpectBackwardMatches(const AttentionCase& c,
                           const core::BackwardResult& got,
                           const Tolerances& tol) {
  const RefDims& d = c.dims();
  const RefBackward& ref = c.reference_backward();
  const core::Layout layout = c.config().layout;
  const core::DType dtype = c.config().dtype;
  absl::StatusOr<std::vector<double>> dq =
      UnpackBnsd(got.dq, c.q_dims(), layout, dtype);
  ASSERT_TRUE(dq.ok()) << "dq: " << dq.status();
  absl::StatusOr<std::vector<double>> dk =
      UnpackBnsd(got.dk, c.k_dims(), layout, dtype);
  ASSERT_TRUE(dk.ok()) << "dk: " << dk.status();
  absl::StatusOr<std::vector<double>> dv =
      UnpackBnsd(got.dv, c.v_dims(), layout, dtype);
  ASSERT_TRUE(dv.ok()) << "dv: " << dv.status();
  const std::vector<bool>& masked_rows = c.reference_forward().fully_masked;
  EXPECT_TRUE(AllClose("dq", *dq, ref.dq, tol.grad, {d.b, d.n1, d.s1, d.d},
                       masked_rows));
  EXPECT_TRUE(AllClose("dk", *dk, ref.dk, tol.grad, {d.b, d.n2, d.s2, d.d},
                       ref.unused_keys));
  EXPECT_TRUE(AllClose("dv", *dv, ref.dv, tol.grad, {d.b, d.n2, d.s2, d.dv},
                       ref.unused_keys));
}

}  // namespace attnserve::test
