// TND (varlen) against the float64 reference run per batch: lengths with
// zero-length batches and Sq_b != Skv_b, GQA and MQA, D > Dv, every TND mask
// form, residuals sent or recomputed; a TND request equal to the same
// batches sent padded; determinism; refusals naming their field.
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/compare.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

// Lengths: a batch with no queries, one with no keys, Sq_b < Skv_b and
// Sq_b > Skv_b.
FeatureConfig Base(DType dtype) {
  FeatureConfig c;
  c.layout = Layout::kTND;
  c.dtype = dtype;
  c.n1 = 6;
  c.n2 = 2;
  c.d = 40;
  c.dv = 24;
  c.seq_q = {17, 0, 29, 11, 6};
  c.seq_kv = {23, 14, 19, 0, 6};
  c.seed = 40 + static_cast<uint64_t>(dtype);
  return c;
}

struct VarlenCase {
  std::string name;
  FeatureConfig (*make)(DType);
};

FeatureConfig NoMask(DType dtype) { return Base(dtype); }

FeatureConfig BandWithMaxMask(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.mask = MaskForm::kTndMax;
  c.pre_tokens = 9;
  c.next_tokens = 3;
  return c;
}

FeatureConfig NegativeNextBandNoMask(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.pre_tokens = 8;
  c.next_tokens = -2;
  return c;
}

FeatureConfig PackedMask(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.mask = MaskForm::kTndPacked;
  c.mask_dtype = DType::kBool;
  return c;
}

FeatureConfig AllMaskPacked(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.sparse_mode = 1;
  c.mask = MaskForm::kTndPacked;
  return c;
}

FeatureConfig AllMaskMaxForm(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.sparse_mode = 1;
  c.mask = MaskForm::kTndMax;
  c.n1 = 4;
  c.n2 = 1;  // MQA.
  return c;
}

FeatureConfig EqualDims(DType dtype) {
  FeatureConfig c = Base(dtype);
  c.d = 64;
  c.dv = 64;
  c.n1 = c.n2 = 3;
  return c;
}

const std::vector<VarlenCase>& Cases() {
  static const std::vector<VarlenCase> cases = {
      {"NoMask", NoMask},
      {"BandWithMaxMask", BandWithMaxMask},
      {"NegativeNextBandNoMask", NegativeNextBandNoMask},
      {"PackedMask", PackedMask},
      {"AllMaskPacked", AllMaskPacked},
      {"AllMaskMaxFormMqa", AllMaskMaxForm},
      {"MhaEqualHeadDims", EqualDims},
  };
  return cases;
}

using VarlenParam = std::tuple<size_t, DType>;

class VarlenTest : public ::testing::TestWithParam<VarlenParam> {
 protected:
  FeatureConfig Config() const {
    return Cases()[std::get<0>(GetParam())].make(std::get<1>(GetParam()));
  }
};

TEST_P(VarlenTest, BothDirectionsMatchReference) {
  CheckBothDirections(Config());
}

TEST_P(VarlenTest, BackwardRecomputesMissingResiduals) {
  CheckBackward(Config(), Residuals::kRecomputed);
}

TEST_P(VarlenTest, BackwardUsesReferenceResiduals) {
  CheckBackward(Config(), Residuals::kReference);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, VarlenTest,
    ::testing::Combine(::testing::Range<size_t>(0, 7),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)),
    [](const ::testing::TestParamInfo<VarlenParam>& info) {
      return absl::StrCat(Cases()[std::get<0>(info.param)].name, "_",
                          core::DTypeName(std::get<1>(info.param)));
    });

// A batch with queries but no keys: out 0, softmax_max 0 and softmax_sum 0
// (not the invalid-line values), zero dq; its neighbours are unaffected.
TEST(VarlenSpecialTest, BatchWithoutKeysGivesZeroStatistics) {
  FeatureConfig config = Base(DType::kFloat32);
  config.seq_q = {5, 7, 3};
  config.seq_kv = {6, 0, 4};
  FeatureCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, fwd, FeatureTolerances(config));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> max,
      UnpackFlat(fwd.softmax_max, {15, 6, 8}, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> sum,
      UnpackFlat(fwd.softmax_sum, {15, 6, 8}, DType::kFloat32));
  for (int64_t t = 5; t < 12; ++t) {  // Tokens of batch 1.
    for (int64_t x = 0; x < 6 * 8; ++x) {
      const size_t at = static_cast<size_t>(t * 48 + x);
      EXPECT_EQ(max[at], 0.0) << "token " << t;
      EXPECT_EQ(sum[at], 0.0) << "token " << t;
    }
  }
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad,
                            RunBackward(c.backward_args(&fwd)));
  ExpectBackwardMatches(c, grad, FeatureTolerances(config),
                        Residuals::kKernelForward);
}

// The same batches sent as TND and as BSND (equal lengths; the harness draws
// the same per-batch data for both) give the same results: TND
// [T, N, D] and BSND [B, S, N, D] share their memory order.
TEST(VarlenSpecialTest, EqualLengthsMatchTheSameRequestSentPadded) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    SCOPED_TRACE(core::DTypeName(dtype));
    FeatureConfig tnd = Base(dtype);
    tnd.seq_q = {37, 37};
    tnd.seq_kv = {53, 53};
    tnd.mask = MaskForm::kTndMax;  // [37, 53] like the padded [S1, S2].
    tnd.pre_tokens = 20;
    tnd.next_tokens = 4;
    FeatureConfig padded = tnd;
    padded.layout = Layout::kBSND;
    padded.b = 2;
    padded.s1 = 37;
    padded.s2 = 53;
    padded.mask = MaskForm::kFull2D;
    FeatureCase a(tnd), b(padded);
    const Tolerances tol = FeatureTolerances(tnd);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fa,
                              RunForward(a.forward_args()));
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fb,
                              RunForward(b.forward_args()));
    ExpectForwardMatches(a, fa, tol);
    ExpectForwardMatches(b, fb, tol);
    ATTN_ASSERT_OK_AND_ASSIGN(std::vector<double> oa,
                              UnpackFlat(fa.attention_out, {74, 6, 24}, dtype));
    ATTN_ASSERT_OK_AND_ASSIGN(
        std::vector<double> ob,
        UnpackFlat(fb.attention_out, {2, 37, 6, 24}, dtype));
    EXPECT_TRUE(AllClose("TND vs BSND attention_out", oa, ob, tol.out));
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult ga,
                              RunBackward(a.backward_args(&fa)));
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult gb,
                              RunBackward(b.backward_args(&fb)));
    ExpectBackwardMatches(a, ga, tol, Residuals::kKernelForward);
    ExpectBackwardMatches(b, gb, tol, Residuals::kKernelForward);
    ATTN_ASSERT_OK_AND_ASSIGN(std::vector<double> ka,
                              UnpackFlat(ga.dk, {106, 2, 40}, dtype));
    ATTN_ASSERT_OK_AND_ASSIGN(std::vector<double> kb,
                              UnpackFlat(gb.dk, {2, 53, 2, 40}, dtype));
    EXPECT_TRUE(AllClose("TND vs BSND dk", ka, kb, tol.grad));
  }
}

// The harness itself: with equal lengths, the TND case packs the same bytes
// as the BSND case and expects the same values in the same (token-major)
// order, so TND expectations rest on the padded path checked elsewhere.
TEST(VarlenSpecialTest, HarnessPacksAndExpectsLikeThePaddedLayout) {
  FeatureConfig tnd = Base(DType::kBFloat16);
  tnd.seq_q = {37, 37};
  tnd.seq_kv = {53, 53};
  tnd.mask = MaskForm::kTndMax;
  tnd.pre_tokens = 20;
  tnd.next_tokens = 4;
  tnd.dropout = DropoutKind::kSeed;
  tnd.keep_prob = 0.75;
  tnd.dropout_seed = 99;
  FeatureConfig padded = tnd;
  padded.layout = Layout::kBSND;
  padded.b = 2;
  padded.s1 = 37;
  padded.s2 = 53;
  padded.mask = MaskForm::kFull2D;
  FeatureCase a(tnd), b(padded);
  const core::ForwardArgs fa = a.forward_args(), fb = b.forward_args();
  auto bytes = [](const core::TensorView& v) {
    return std::string(static_cast<const char*>(v.data), v.size_bytes);
  };
  EXPECT_EQ(bytes(fa.query), bytes(fb.query));
  EXPECT_EQ(bytes(fa.key), bytes(fb.key));
  EXPECT_EQ(bytes(fa.value), bytes(fb.value));
  EXPECT_EQ(bytes(*fa.options.atten_mask), bytes(*fb.options.atten_mask));
  EXPECT_EQ(a.total_drop_bits(), b.total_drop_bits());
  EXPECT_EQ(a.DropKeepBytes(), b.DropKeepBytes());
  EXPECT_EQ(fa.options.actual_seq_qlen, (std::vector<int64_t>{37, 74}));
  EXPECT_EQ(fa.options.actual_seq_kvlen, (std::vector<int64_t>{53, 106}));
  // Expectations: padded order [B][N][S][D] vs token-major [T][N][D].
  const FeatureExpectation& ea = a.expected();
  const FeatureExpectation& eb = b.expected();
  auto bnsd_to_tnd = [](const std::vector<double>& v, int64_t n, int64_t s,
                        int64_t d) {
    std::vector<double> out(v.size());
    const int64_t batches = static_cast<int64_t>(v.size()) / (n * s * d);
    for (int64_t bb = 0; bb < batches; ++bb) {
      for (int64_t h = 0; h < n; ++h) {
        for (int64_t t = 0; t < s; ++t) {
          for (int64_t x = 0; x < d; ++x) {
            out[static_cast<size_t>(((bb * s + t) * n + h) * d + x)] =
                v[static_cast<size_t>(((bb * n + h) * s + t) * d + x)];
          }
        }
      }
    }
    return out;
  };
  EXPECT_EQ(ea.out, bnsd_to_tnd(eb.out, 6, 37, 24));
  EXPECT_EQ(ea.stat_max, bnsd_to_tnd(eb.stat_max, 6, 37, 1));
  EXPECT_EQ(ea.stat_sum, bnsd_to_tnd(eb.stat_sum, 6, 37, 1));
  EXPECT_EQ(ea.dq, bnsd_to_tnd(eb.dq, 6, 37, 40));
  EXPECT_EQ(ea.dk, bnsd_to_tnd(eb.dk, 2, 53, 40));
  EXPECT_EQ(ea.dv, bnsd_to_tnd(eb.dv, 2, 53, 24));
  const core::BackwardArgs ba = a.backward_args_with_reference_residuals();
  const core::BackwardArgs bb = b.backward_args_with_reference_residuals();
  EXPECT_EQ(bytes(*ba.attention_in), bytes(*bb.attention_in));
  EXPECT_EQ(ba.softmax_max->shape, (std::vector<int64_t>{74, 6, 8}));
  EXPECT_EQ(bb.softmax_max->shape, (std::vector<int64_t>{2, 6, 37, 8}));
}

// TND allows D up to 768 with qD == kD >= vD.
TEST(VarlenSpecialTest, HeadDimBeyondThePaddedLimit) {
  FeatureConfig config = Base(DType::kFloat32);
  config.n1 = 2;
  config.n2 = 1;
  config.d = 768;
  config.dv = 512;
  config.seq_q = {5, 0, 9};
  config.seq_kv = {7, 3, 4};
  config.qk_range = 0.3;
  CheckBothDirections(config);
}

TEST(VarlenSpecialTest, BackwardIsBitwiseDeterministicAcrossThreadCounts) {
  FeatureConfig config = Base(DType::kFloat16);
  config.seq_q = {130, 0, 257, 64};
  config.seq_kv = {70, 33, 301, 64};
  config.n1 = 4;
  config.n2 = 1;
  FeatureCase c(config);
  const core::BackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult one, RunBackward(args, 1));
  ExpectBackwardMatches(c, one, FeatureTolerances(config),
                        Residuals::kReference);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult three, RunBackward(args, 3));
  EXPECT_TRUE(one.dq.bytes == three.dq.bytes) << "dq differs";
  EXPECT_TRUE(one.dk.bytes == three.dk.bytes) << "dk differs";
  EXPECT_TRUE(one.dv.bytes == three.dv.bytes) << "dv differs";
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult f1,
                            RunForward(c.forward_args(), 1));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult f3,
                            RunForward(c.forward_args(), 3));
  EXPECT_TRUE(f1.attention_out.bytes == f3.attention_out.bytes);
  EXPECT_TRUE(f1.softmax_sum.bytes == f3.softmax_sum.bytes);
}

// ---------------------------------------------------------------------------
// Refusals.

class VarlenRejectTest : public ::testing::Test {
 protected:
  VarlenRejectTest() : c_(Base(DType::kFloat32)) {}
  FeatureCase c_;  // T1 = 63, T2 = 62, B = 5.
};

TEST_F(VarlenRejectTest, CumulativeLengthsMustEndAtTheTokenCount) {
  core::ForwardArgs args = c_.forward_args();
  args.options.actual_seq_qlen.back() = 62;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "actual_seq_qlen"));
  args = c_.forward_args();
  args.options.actual_seq_kvlen.back() = 63;
  EXPECT_TRUE(
      IsInvalidOn(core::PlanForward(args).status(), "actual_seq_kvlen"));
}

TEST_F(VarlenRejectTest, CumulativeLengthsMustNotDecrease) {
  core::ForwardArgs args = c_.forward_args();
  // 17, 17, 46, 57, 63 -> 17, 16, 46, ...
  args.options.actual_seq_qlen[1] = 16;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "actual_seq_qlen"));
  args = c_.forward_args();
  args.options.actual_seq_kvlen[0] = -1;
  EXPECT_TRUE(
      IsInvalidOn(core::PlanForward(args).status(), "actual_seq_kvlen"));
}

TEST_F(VarlenRejectTest, LengthArraysMustBeSentWithEqualSizes) {
  core::ForwardArgs args = c_.forward_args();
  args.options.actual_seq_kvlen.pop_back();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "actual_seq"));
  args = c_.forward_args();
  args.options.actual_seq_qlen.clear();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "actual_seq_qlen"));
}

TEST_F(VarlenRejectTest, ValueHeadDimAboveQueryHeadDim) {
  FeatureConfig config = Base(DType::kFloat32);
  config.dv = 48;  // > D = 40.
  FeatureCase c(config);
  EXPECT_TRUE(
      IsInvalidOn(core::PlanForward(c.forward_args()).status(), "value.shape"));
}

TEST_F(VarlenRejectTest, MaskOfAnotherShape) {
  const core::HostTensor mask = PackBytes(
      std::vector<uint8_t>(static_cast<size_t>(29 * 22), 0), {29, 22},
      DType::kUInt8);  // Neither [maxSq, maxSkv] = [29, 23] nor [T1, T2].
  core::ForwardArgs args = c_.forward_args();
  args.options.atten_mask = mask.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "atten_mask"));
}

TEST_F(VarlenRejectTest, SoftmaxStatisticsMustBeTokenMajor) {
  core::BackwardArgs args = c_.backward_args_with_reference_residuals();
  const core::HostTensor padded_stats =
      core::MakeHostTensor(DType::kFloat32, {5, 6, 29, 8});
  args.softmax_max = padded_stats.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(args).status(), "softmax_max"));
}

// Slopes with Sq_b == Skv_b everywhere would be legal, but a zero-length
// batch excludes any pse.
TEST_F(VarlenRejectTest, PseWithZeroLengthBatches) {
  FeatureConfig config = Base(DType::kFloat32);
  config.seq_q = {5, 0, 7};
  config.seq_kv = {5, 0, 7};
  FeatureCase c(config);
  const core::HostTensor slopes = core::MakeHostTensor(DType::kFloat32, {6});
  core::ForwardArgs args = c.forward_args();
  args.options.pse = slopes.view();
  args.options.pse_type = 2;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
}

}  // namespace
}  // namespace attnserve::test
