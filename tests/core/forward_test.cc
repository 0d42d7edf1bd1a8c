// FlashAttentionScore forward against the float64 reference: the full grid of
// layouts, dtypes, head groupings and mask forms, plus targeted cases.
#include <cfloat>

#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/attention_grid.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

class ForwardGridTest : public ::testing::TestWithParam<GridParam> {};

TEST_P(ForwardGridTest, MatchesReference) {
  const CaseConfig config = GridConfig(GetParam());
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, got, TolerancesFor(config.dtype));
}

INSTANTIATE_TEST_SUITE_P(Grid, ForwardGridTest, GridValues(), GridName);

// One case per dtype on a fixed layout, for the targeted tests below.
CaseConfig Base(DType dtype, Layout layout = Layout::kBSND) {
  CaseConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.dims = RefDims{2, 6, 2, 37, 53, 40, 40};
  c.seed = 77;
  return c;
}

class ForwardDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(ForwardDtypeTest, ValueHeadDimMayDifferFromQueryHeadDim) {
  for (Layout layout : {Layout::kBSH, Layout::kBNSD}) {
    CaseConfig config = Base(GetParam(), layout);
    config.dims.dv = 24;
    config.mask = MaskKind::kPerBatch;
    SCOPED_TRACE(CaseName(config));
    AttentionCase c(config);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                              RunForward(c.forward_args()));
    ExpectForwardMatches(c, got, TolerancesFor(config.dtype));
  }
}

TEST_P(ForwardDtypeTest, BandWithoutMaskTensorMasksOutsideWindow) {
  // keep: i - 4 <= j <= i - 2, so rows 0 and 1 keep nothing.
  CaseConfig config = Base(GetParam(), Layout::kBSH);
  config.pre_tokens = 4;
  config.next_tokens = -2;
  AttentionCase c(config);
  ASSERT_TRUE(c.reference_forward().fully_masked[0]);
  ASSERT_FALSE(c.reference_forward().fully_masked[2]);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, got, TolerancesFor(config.dtype));
}

TEST_P(ForwardDtypeTest, BandWithAgreeingMaskTensor) {
  CaseConfig config = Base(GetParam(), Layout::kSBH);
  config.pre_tokens = 10;
  config.next_tokens = 5;
  config.mask = MaskKind::kFull2D;  // Also 1 everywhere outside the band.
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, got, TolerancesFor(config.dtype));
}

TEST_P(ForwardDtypeTest, ManyThreadsGiveTheSameResult) {
  CaseConfig config = Base(GetParam(), Layout::kBNSD);
  config.mask = MaskKind::kPerHead;
  config.dims.s1 = 300;  // Several query tiles to share out.
  AttentionCase c(config);
  for (int threads : {2, 3}) {
    SCOPED_TRACE(threads);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                              RunForward(c.forward_args(), threads));
    ExpectForwardMatches(c, got, TolerancesFor(config.dtype));
  }
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, ForwardDtypeTest, ComputeDTypes(),
                         DTypeParamName);

TEST(ForwardTest, LargeScoresStayFinite) {
  // scale 1 and |q|, |k| < 4 give scores up to ~640: exp() of an
  // unshifted score would overflow fp32.
  CaseConfig config = Base(DType::kFloat32);
  config.scale = 1.0;
  config.qk_range = 4.0;
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunForward(c.forward_args()));
  // Scores this large are each off by up to ~D * 16 * 2^-24 in fp32 (the
  // products are exact only in double), which moves exp() by that much.
  Tolerances tol = TolerancesFor(DType::kFloat32);
  tol.out = 1e-4;
  tol.softmax_sum = 1e-4;
  ExpectForwardMatches(c, got, tol);
}

TEST(ForwardTest, ScaleValueIsApplied) {
  CaseConfig config = Base(DType::kFloat32, Layout::kBSH);
  config.scale = 0.3;
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, got, TolerancesFor(DType::kFloat32));
}

TEST(ForwardTest, ReportsStats) {
  AttentionCase c(Base(DType::kFloat32));
  const core::ForwardArgs args = c.forward_args();
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardCall call,
                            core::ForwardCall::Prepare(args));
  core::Engine engine(core::EngineOptions{});
  core::CancelToken token;
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, engine.Run(call, token));
  EXPECT_GT(got.stats.tiles_computed, 0);
  EXPECT_EQ(got.stats.tiles_skipped, 0);
  EXPECT_GT(got.stats.flops, 0);
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
  EXPECT_FALSE(engine.backends().empty());
}

}  // namespace
}  // namespace attnserve::test
