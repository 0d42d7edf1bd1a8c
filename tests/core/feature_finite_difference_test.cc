// Gradients with pse and dropout against central finite differences of the
// loss sum(out * dy) on tiny FLOAT32 problems: the kernel's dq/dk/dv/dpse
// against differences of the kernel's own forward (the seed regenerates the
// same dropout mask on every run), and the float64 reference's (dS reduced
// to dpse on the test side) against differences of the reference forward.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/compare.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/pse_reference.h"
#include "tests/testing/reference_attention.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

enum class Which { kQ, kK, kV, kPse };

struct FdParam {
  std::string name;
  PseForm pse;
  int64_t pse_type;
  DropoutKind dropout;
  int64_t sparse_mode;
};

void PrintTo(const FdParam& p, std::ostream* os) { *os << p.name; }

FeatureConfig FdConfig(const FdParam& p) {
  FeatureConfig c;
  c.layout = Layout::kBSH;
  c.dtype = DType::kFloat32;
  c.b = 2;
  c.n1 = 2;
  c.n2 = 1;
  c.s1 = c.s2 = 6;
  c.d = 4;
  c.dv = 4;
  c.qk_range = 1.0;
  c.sparse_mode = p.sparse_mode;
  c.pse = p.pse;
  c.pse_type = p.pse_type;
  if (IsSlopes(p.pse)) c.q_start_idx = {1};
  c.dropout = p.dropout;
  c.keep_prob = p.dropout == DropoutKind::kNone ? 1.0 : 0.75;
  c.dropout_seed = 21;
  c.seed = 3 + static_cast<uint64_t>(p.pse_type);
  return c;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// q, k, v (canonical [B][N][S][D]) and the pse values of one evaluation.
struct Point {
  std::vector<double> q, k, v, pse;
};

Point Start(const FeatureCase& c) {
  return Point{c.canonical_q(), c.canonical_k(), c.canonical_v(),
               c.pse().values};
}

std::vector<double>& Coordinate(Point* p, Which which) {
  switch (which) {
    case Which::kQ:
      return p->q;
    case Which::kK:
      return p->k;
    case Which::kV:
      return p->v;
    case Which::kPse:
      break;
  }
  return p->pse;
}

// The slice of batch b of a canonical array of per-batch size `size`.
std::vector<double> Slice(const std::vector<double>& v, int64_t b,
                          size_t size) {
  return std::vector<double>(v.begin() + static_cast<int64_t>(b * size),
                             v.begin() + static_cast<int64_t>((b + 1) * size));
}

double ReferenceLoss(const FeatureCase& c, const Point& x) {
  PseSpec spec = c.pse();
  spec.values = x.pse;
  double loss = 0;
  for (int64_t b = 0; b < c.batches(); ++b) {
    RefProblem p = c.BatchProblem(b);
    p.q = Slice(x.q, b, p.q.size());
    p.k = Slice(x.k, b, p.k.size());
    p.v = Slice(x.v, b, p.v.size());
    p.bias = MakePseBiasFn(spec, b, c.sq(b));
    loss += Dot(ReferenceForward(p).out, c.batch_dy(b));
  }
  return loss;
}

double KernelLoss(const FeatureCase& c, const Point& x) {
  const Layout layout = c.config().layout;
  const core::HostTensor qt =
      PackBnsd(x.q, c.q_dims(), layout, DType::kFloat32);
  const core::HostTensor kt =
      PackBnsd(x.k, c.k_dims(), layout, DType::kFloat32);
  const core::HostTensor vt =
      PackBnsd(x.v, c.v_dims(), layout, DType::kFloat32);
  const core::HostTensor pt =
      PackFlat(x.pse, c.pse_tensor()->shape, DType::kFloat32);
  core::ForwardArgs args = c.forward_args();
  args.query = qt.view();
  args.key = kt.view();
  args.value = vt.view();
  args.options.pse = pt.view();
  absl::StatusOr<core::ForwardResult> fwd = RunForward(args);
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  if (!fwd.ok()) return 0;
  absl::StatusOr<std::vector<double>> out =
      UnpackBnsd(fwd->attention_out, c.out_dims(), layout, DType::kFloat32);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? Dot(*out, c.canonical_dy()) : 0;
}

// Central differences of `loss` with respect to every element of `which`;
// `fp32` rounds the perturbed values to float32 (the kernel's inputs).
template <typename Loss>
std::vector<double> Differences(const FeatureCase& c, Which which, double eps,
                                bool fp32, Loss loss) {
  Point x = Start(c);
  std::vector<double>& v = Coordinate(&x, which);
  std::vector<double> grad(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double x0 = v[i];
    const double plus = fp32 ? static_cast<float>(x0 + eps) : x0 + eps;
    const double minus = fp32 ? static_cast<float>(x0 - eps) : x0 - eps;
    v[i] = plus;
    const double lp = loss(c, x);
    v[i] = minus;
    const double lm = loss(c, x);
    v[i] = x0;
    grad[i] = (lp - lm) / (plus - minus);
  }
  return grad;
}

class FeatureFiniteDifferenceTest : public ::testing::TestWithParam<FdParam> {};

// In double with eps = 1e-5 both the truncation and the rounding errors are
// ~1e-10: 1e-8 of the largest gradient.
TEST_P(FeatureFiniteDifferenceTest, ReferenceGradientsMatchDifferences) {
  FeatureCase c(FdConfig(GetParam()));
  const FeatureExpectation& e = c.expected();
  constexpr double kEps = 1e-5, kTol = 1e-8;
  EXPECT_TRUE(AllClose("ref dq",
                       Differences(c, Which::kQ, kEps, false, ReferenceLoss),
                       e.dq, kTol));
  EXPECT_TRUE(AllClose("ref dk",
                       Differences(c, Which::kK, kEps, false, ReferenceLoss),
                       e.dk, kTol));
  EXPECT_TRUE(AllClose("ref dv",
                       Differences(c, Which::kV, kEps, false, ReferenceLoss),
                       e.dv, kTol));
  ASSERT_TRUE(e.dpse.has_value());
  EXPECT_TRUE(AllClose("ref dpse",
                       Differences(c, Which::kPse, kEps, false, ReferenceLoss),
                       e.dpse->dpse, kTol));
}

// eps = 1e-2 on inputs of size ~1 as in finite_difference_test: the
// truncation (~eps^2) and the fp32 rounding of the loss (~1e-7 / eps) stay
// well under 1e-3 of the largest gradient.
TEST_P(FeatureFiniteDifferenceTest, KernelGradientsMatchKernelDifferences) {
  FeatureCase c(FdConfig(GetParam()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad,
                            RunBackward(c.backward_args(&fwd)));
  const Layout layout = c.config().layout;
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dq,
      UnpackBnsd(grad.dq, c.q_dims(), layout, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dk,
      UnpackBnsd(grad.dk, c.k_dims(), layout, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dv,
      UnpackBnsd(grad.dv, c.v_dims(), layout, DType::kFloat32));
  ASSERT_TRUE(grad.dpse.has_value());
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> dpse,
      UnpackFlat(*grad.dpse, c.pse_tensor()->shape, DType::kFloat32));
  constexpr double kEps = 1e-2, kTol = 1e-3;
  EXPECT_TRUE(AllClose("dq vs differences",
                       Differences(c, Which::kQ, kEps, true, KernelLoss), dq,
                       kTol));
  EXPECT_TRUE(AllClose("dk vs differences",
                       Differences(c, Which::kK, kEps, true, KernelLoss), dk,
                       kTol));
  EXPECT_TRUE(AllClose("dv vs differences",
                       Differences(c, Which::kV, kEps, true, KernelLoss), dv,
                       kTol));
  EXPECT_TRUE(AllClose("dpse vs differences",
                       Differences(c, Which::kPse, kEps, true, KernelLoss),
                       dpse, kTol));
}

INSTANTIATE_TEST_SUITE_P(
    Tiny, FeatureFiniteDifferenceTest,
    ::testing::Values(
        FdParam{"FullPseType1Seed", PseForm::kFull, 1, DropoutKind::kSeed, 0},
        FdParam{"RowPseType0Seed", PseForm::kRow, 0, DropoutKind::kSeed, 0},
        FdParam{"SharedPseType1Causal", PseForm::kBatchShared, 1,
                DropoutKind::kNone, 2},
        FdParam{"SlopesType2Seed", PseForm::kSlopes, 2, DropoutKind::kSeed, 0},
        FdParam{"SharedSlopesType3DropMask", PseForm::kSlopesShared, 3,
                DropoutKind::kMask, 3}),
    [](const ::testing::TestParamInfo<FdParam>& info) {
      return info.param.name;
    });

// Without a pse the reference gradients with dropout alone also match.
TEST(FeatureFiniteDifferenceTest, ReferenceDropoutOnlyMatchesDifferences) {
  FeatureConfig config =
      FdConfig(FdParam{"", PseForm::kNone, 1, DropoutKind::kSeed, 0});
  config.s2 = 9;
  FeatureCase c(config);
  constexpr double kEps = 1e-5, kTol = 1e-8;
  auto loss = [](const FeatureCase& fc, const Point& x) {
    double sum = 0;
    for (int64_t b = 0; b < fc.batches(); ++b) {
      RefProblem p = fc.BatchProblem(b);
      p.q = Slice(x.q, b, p.q.size());
      p.k = Slice(x.k, b, p.k.size());
      p.v = Slice(x.v, b, p.v.size());
      sum += Dot(ReferenceForward(p).out, fc.batch_dy(b));
    }
    return sum;
  };
  EXPECT_TRUE(AllClose("ref dq", Differences(c, Which::kQ, kEps, false, loss),
                       c.expected().dq, kTol));
  EXPECT_TRUE(AllClose("ref dk", Differences(c, Which::kK, kEps, false, loss),
                       c.expected().dk, kTol));
  EXPECT_TRUE(AllClose("ref dv", Differences(c, Which::kV, kEps, false, loss),
                       c.expected().dv, kTol));
}

}  // namespace
}  // namespace attnserve::test
