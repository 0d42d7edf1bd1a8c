// FlashAttentionScoreGrad against the float64 reference: the full grid with
// the residuals of the kernel's own forward, plus recomputed residuals,
// reference residuals and determinism across thread counts.
#include <cstring>

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

class BackwardGridTest : public ::testing::TestWithParam<GridParam> {};

TEST_P(BackwardGridTest, MatchesReference) {
  const CaseConfig config = GridConfig(GetParam());
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                            RunBackward(c.backward_args(&fwd)));
  ExpectBackwardMatches(c, got, TolerancesFor(config.dtype));
}

INSTANTIATE_TEST_SUITE_P(Grid, BackwardGridTest, GridValues(), GridName);

CaseConfig Base(DType dtype, Layout layout) {
  CaseConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.dims = RefDims{2, 6, 2, 37, 53, 40, 40};
  c.mask = MaskKind::kPerBatch;
  c.seed = 99;
  return c;
}

class BackwardDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(BackwardDtypeTest, RecomputesMissingResiduals) {
  for (Layout layout : {Layout::kBSH, Layout::kBNSD}) {
    const CaseConfig config = Base(GetParam(), layout);
    SCOPED_TRACE(CaseName(config));
    AttentionCase c(config);
    const core::BackwardArgs args = c.backward_args(nullptr);
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardPlan plan,
                              core::PlanBackward(args));
    EXPECT_FALSE(plan.has_residuals);
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got, RunBackward(args));
    ExpectBackwardMatches(c, got, TolerancesFor(config.dtype));
  }
}

TEST_P(BackwardDtypeTest, UsesResidualsFromTheReference) {
  const CaseConfig config = Base(GetParam(), Layout::kSBH);
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardResult got,
      RunBackward(c.backward_args_with_reference_residuals()));
  ExpectBackwardMatches(c, got, TolerancesFor(config.dtype));
}

TEST_P(BackwardDtypeTest, ValueHeadDimMayDifferFromQueryHeadDim) {
  for (Layout layout : {Layout::kSBH, Layout::kBSND}) {
    CaseConfig config = Base(GetParam(), layout);
    config.dims.dv = 24;
    SCOPED_TRACE(CaseName(config));
    AttentionCase c(config);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                              RunForward(c.forward_args()));
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                              RunBackward(c.backward_args(&fwd)));
    ExpectBackwardMatches(c, got, TolerancesFor(config.dtype));
  }
}

TEST_P(BackwardDtypeTest, BandWithFullyMaskedRows) {
  CaseConfig config = Base(GetParam(), Layout::kBSND);
  config.mask = MaskKind::kNone;
  config.pre_tokens = 4;
  config.next_tokens = -2;
  AttentionCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                            RunBackward(c.backward_args(&fwd)));
  ExpectBackwardMatches(c, got, TolerancesFor(config.dtype));
}

// The semantics promise the same bits for any thread count.
TEST_P(BackwardDtypeTest, IsBitwiseDeterministicAcrossThreadCounts) {
  CaseConfig config = Base(GetParam(), Layout::kBNSD);
  config.dims = RefDims{2, 4, 1, 300, 270, 40, 40};  // MQA: dk sums 4 heads.
  AttentionCase c(config);
  const core::BackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult one, RunBackward(args, 1));
  ExpectBackwardMatches(c, one, TolerancesFor(config.dtype));
  for (int threads : {2, 3, 4, 5}) {
    SCOPED_TRACE(threads);
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult many,
                              RunBackward(args, threads));
    EXPECT_TRUE(many.dq.bytes == one.dq.bytes) << "dq differs";
    EXPECT_TRUE(many.dk.bytes == one.dk.bytes) << "dk differs";
    EXPECT_TRUE(many.dv.bytes == one.dv.bytes) << "dv differs";
  }
  // And for a repeated run with the same thread count.
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult again, RunBackward(args, 3));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult again2, RunBackward(args, 3));
  EXPECT_TRUE(again.dk.bytes == again2.dk.bytes);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, BackwardDtypeTest, ComputeDTypes(),
                         DTypeParamName);

}  // namespace
}  // namespace attnserve::test
