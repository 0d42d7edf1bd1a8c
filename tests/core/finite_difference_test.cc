// Gradients against central finite differences of the loss sum(out * W):
// the kernel's dq/dk/dv against differences of the kernel's own fp32
// forward, and the float64 reference backward against differences of the
// reference forward.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/compare.h"
#include "tests/testing/reference_attention.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

enum class Which { kQ, kK, kV };

struct FdParam {
  std::string name;
  int64_t n2;
  MaskKind mask;
};

CaseConfig FdConfig(const FdParam& param) {
  CaseConfig c;
  c.layout = Layout::kBSH;
  c.dtype = DType::kFloat32;
  c.dims = RefDims{1, 2, param.n2, 5, 7, 4, 4};
  c.mask = param.mask;
  c.masked_fraction = 0.25;
  c.fully_masked_rows = 1;  // Its q gradient and differences are exactly 0.
  c.fully_masked_cols = 1;  // Likewise for one key's k/v gradients.
  c.qk_range = 1.0;
  c.seed = 5 + static_cast<uint64_t>(param.n2);
  return c;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

class FiniteDifferenceTest : public ::testing::TestWithParam<FdParam> {
 protected:
  // sum(out * W) with the kernel's forward on `q, k, v` (fp32 values).
  double KernelLoss(const AttentionCase& c, const std::vector<double>& q,
                    const std::vector<double>& k,
                    const std::vector<double>& v) {
    const Layout layout = c.config().layout;
    const core::HostTensor qt =
        PackBnsd(q, c.q_dims(), layout, DType::kFloat32);
    const core::HostTensor kt =
        PackBnsd(k, c.k_dims(), layout, DType::kFloat32);
    const core::HostTensor vt =
        PackBnsd(v, c.v_dims(), layout, DType::kFloat32);
    core::ForwardArgs args = c.forward_args();
    args.query = qt.view();
    args.key = kt.view();
    args.value = vt.view();
    absl::StatusOr<core::ForwardResult> fwd = RunForward(args);
    EXPECT_TRUE(fwd.ok()) << fwd.status();
    if (!fwd.ok()) return 0;
    absl::StatusOr<std::vector<double>> out =
        UnpackBnsd(fwd->attention_out, c.out_dims(), layout, DType::kFloat32);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? Dot(*out, c.dy()) : 0;
  }

  // Central differences of KernelLoss with respect to every element of
  // q, k or v, stepping by `eps` rounded to fp32.
  std::vector<double> KernelDifferences(const AttentionCase& c, Which which,
                                        double eps) {
    std::vector<double> q = c.problem().q, k = c.problem().k, v = c.problem().v;
    std::vector<double>& x = which == Which::kQ   ? q
                             : which == Which::kK ? k
                                                  : v;
    std::vector<double> grad(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      const double plus = static_cast<float>(x0 + eps);
      const double minus = static_cast<float>(x0 - eps);
      x[i] = plus;
      const double lp = KernelLoss(c, q, k, v);
      x[i] = minus;
      const double lm = KernelLoss(c, q, k, v);
      x[i] = x0;
      grad[i] = (lp - lm) / (plus - minus);
    }
    return grad;
  }

  // The same in double on the reference.
  static std::vector<double> ReferenceDifferences(const AttentionCase& c,
                                                  Which which, double eps) {
    RefProblem p = c.problem();
    std::vector<double>& x = which == Which::kQ   ? p.q
                             : which == Which::kK ? p.k
                                                  : p.v;
    std::vector<double> grad(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + eps;
      const double lp = Dot(ReferenceForward(p).out, c.dy());
      x[i] = x0 - eps;
      const double lm = Dot(ReferenceForward(p).out, c.dy());
      x[i] = x0;
      grad[i] = (lp - lm) / (2 * eps);
    }
    return grad;
  }
};

// eps = 1e-2 on inputs of size ~1: the central-difference truncation error
// is ~eps^2/6 * |f'''| ~ 2e-5, and the fp32 rounding of the loss (~40 terms
// of |out * W| < 1, each off by <= 2^-24 relative) divided by 2 eps is
// ~5e-5 at worst; the kernel's own gradient is fp32-accurate. 1e-3 of the
// largest gradient leaves a margin of ~10x over both (measured <= 9.5e-5).
TEST_P(FiniteDifferenceTest, KernelGradientsMatchKernelDifferences) {
  AttentionCase c(FdConfig(GetParam()));
  const Layout layout = c.config().layout;
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad,
                            RunBackward(c.backward_args(&fwd)));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dq,
      UnpackBnsd(grad.dq, c.q_dims(), layout, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dk,
      UnpackBnsd(grad.dk, c.k_dims(), layout, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dv,
      UnpackBnsd(grad.dv, c.v_dims(), layout, DType::kFloat32));
  constexpr double kEps = 1e-2, kTol = 1e-3;
  const RefDims& d = c.dims();
  EXPECT_TRUE(AllClose(
      "dq vs differences", KernelDifferences(c, Which::kQ, kEps), dq, kTol,
      {d.b, d.n1, d.s1, d.d}, c.reference_forward().fully_masked));
  EXPECT_TRUE(AllClose(
      "dk vs differences", KernelDifferences(c, Which::kK, kEps), dk, kTol,
      {d.b, d.n2, d.s2, d.d}, c.reference_backward().unused_keys));
  EXPECT_TRUE(AllClose(
      "dv vs differences", KernelDifferences(c, Which::kV, kEps), dv, kTol,
      {d.b, d.n2, d.s2, d.dv}, c.reference_backward().unused_keys));
}

// In double with eps = 1e-5 both the truncation (~eps^2) and the rounding
// (~1e-16 / eps) errors are ~1e-10 (measured <= 3.4e-10): 1e-8.
TEST_P(FiniteDifferenceTest, ReferenceGradientsMatchReferenceDifferences) {
  AttentionCase c(FdConfig(GetParam()));
  const RefBackward& ref = c.reference_backward();
  constexpr double kEps = 1e-5, kTol = 1e-8;
  EXPECT_TRUE(AllClose("ref dq", ReferenceDifferences(c, Which::kQ, kEps),
                       ref.dq, kTol));
  EXPECT_TRUE(AllClose("ref dk", ReferenceDifferences(c, Which::kK, kEps),
                       ref.dk, kTol));
  EXPECT_TRUE(AllClose("ref dv", ReferenceDifferences(c, Which::kV, kEps),
                       ref.dv, kTol));
}

INSTANTIATE_TEST_SUITE_P(
    Tiny, FiniteDifferenceTest,
    ::testing::Values(FdParam{"Mha", 2, MaskKind::kNone},
                      FdParam{"MhaMasked", 2, MaskKind::kFull2D},
                      FdParam{"MqaMasked", 1, MaskKind::kPerHead}),
    [](const ::testing::TestParamInfo<FdParam>& info) {
      return info.param.name;
    });

// The reference itself on a hand-checkable case: one query, two keys.
TEST(ReferenceAttentionTest, TwoKeysByHand) {
  RefProblem p;
  p.dims = RefDims{1, 1, 1, 1, 2, 1, 1};
  p.q = {1.0};
  p.k = {0.0, std::log(3.0)};  // Scores 0 and ln 3: P = 1/4, 3/4.
  p.v = {2.0, 6.0};
  p.scale = 1.0;
  const RefForward f = ReferenceForward(p);
  EXPECT_DOUBLE_EQ(f.out[0], 0.25 * 2 + 0.75 * 6);
  EXPECT_DOUBLE_EQ(f.softmax_max[0], std::log(3.0));
  EXPECT_DOUBLE_EQ(f.softmax_sum[0], 1.0 + 1.0 / 3.0);
  // dv = P * dy; dq = sum P (dP - D) k with dP = dy * v, D = dy * out.
  const RefBackward g = ReferenceBackward(p, {1.0});
  EXPECT_DOUBLE_EQ(g.dv[0], 0.25);
  EXPECT_DOUBLE_EQ(g.dv[1], 0.75);
  const double out = 5.0;
  EXPECT_NEAR(g.dq[0], 0.75 * (6.0 - out) * std::log(3.0), 1e-15);
  EXPECT_NEAR(g.dk[0], 0.25 * (2.0 - out) * 1.0, 1e-15);
  EXPECT_NEAR(g.dk[1], 0.75 * (6.0 - out) * 1.0, 1e-15);
}

TEST(ReferenceAttentionTest, FullyMaskedRowGivesInvalidLine) {
  RefProblem p;
  p.dims = RefDims{1, 1, 1, 2, 2, 1, 1};
  p.q = {1.0, 2.0};
  p.k = {0.5, -0.5};
  p.v = {1.0, 3.0};
  RefMask mask;
  mask.shape = {2, 2};
  mask.values = {1, 1, 0, 1};  // Row 0 fully masked; row 1 keeps key 0.
  p.keep = MakeKeepFn(p.dims, mask);
  const RefForward f = ReferenceForward(p);
  EXPECT_TRUE(f.fully_masked[0]);
  EXPECT_EQ(f.out[0], 0.0);
  EXPECT_EQ(f.softmax_max[0], -static_cast<double>(FLT_MAX));
  EXPECT_EQ(f.softmax_sum[0], static_cast<double>(FLT_MAX));
  EXPECT_FALSE(f.fully_masked[1]);
  EXPECT_DOUBLE_EQ(f.out[1], 1.0);
  EXPECT_DOUBLE_EQ(f.softmax_sum[1], 1.0);
  const RefBackward g = ReferenceBackward(p, {1.0, 1.0});
  EXPECT_EQ(g.dq[0], 0.0);
  EXPECT_EQ(g.dk[1], 0.0);  // Key 1 is never kept.
  EXPECT_EQ(g.dv[1], 0.0);
  EXPECT_DOUBLE_EQ(g.dv[0], 1.0);
}

TEST(ReferenceAttentionTest, MaskBroadcastAndBand) {
  RefDims dims{2, 2, 1, 3, 4, 1, 1};
  RefMask mask;
  mask.shape = {2, 1, 3, 4};
  mask.values.assign(24, 0);
  mask.values[12 + 1 * 4 + 2] = 1;  // Batch 1, row 1, col 2; every head.
  mask.pre_tokens = 1;
  mask.next_tokens = 0;
  const KeepFn keep = MakeKeepFn(dims, mask);
  EXPECT_TRUE(keep(0, 1, 1, 1));
  EXPECT_TRUE(keep(0, 1, 1, 0));
  EXPECT_FALSE(keep(0, 1, 1, 2));  // Beyond next_tokens = 0.
  EXPECT_FALSE(keep(0, 0, 2, 0));  // Before pre_tokens = 1.
  EXPECT_TRUE(keep(0, 0, 2, 2));
  mask.pre_tokens = mask.next_tokens = core::kDefaultWindowTokens;
  const KeepFn wide = MakeKeepFn(dims, mask);
  EXPECT_TRUE(wide(0, 0, 1, 2));
  EXPECT_FALSE(wide(1, 0, 1, 2));
  EXPECT_FALSE(wide(1, 1, 1, 2));
  EXPECT_TRUE(wide(1, 1, 1, 3));
}

}  // namespace
}  // namespace attnserve::test
