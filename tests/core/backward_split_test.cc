// The backward's split decomposition (dK/dV over kv tiles, then dQ over query
// tiles) runs when a request has fewer kv heads than workers and no pse. It
// must match the float64 reference and give the same bits as the fused
// decomposition one worker runs, at shapes off the tile edges and with every
// feature that can reach it (masks, sparse modes, dropout, TND varlen, GQA).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

// Backward at 1 worker (fused) and at 2, 3 and 5 workers (split when
// B * N2 is below that): every result matches the reference, and all have
// the bits of the one-worker run.
void CheckSplitMatchesFused(const FeatureConfig& config) {
  SCOPED_TRACE(FeatureCaseName(config));
  FeatureCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args(), 2));
  const core::BackwardArgs args = c.backward_args(&fwd);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult one, RunBackward(args, 1));
  ExpectBackwardMatches(c, one, FeatureTolerances(config),
                        Residuals::kKernelForward);
  for (int threads : {2, 3, 5}) {
    SCOPED_TRACE(absl::StrCat("threads=", threads));
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult many,
                              RunBackward(args, threads));
    ExpectBackwardMatches(c, many, FeatureTolerances(config),
                          Residuals::kKernelForward);
    EXPECT_TRUE(many.dq.bytes == one.dq.bytes) << "dq differs";
    EXPECT_TRUE(many.dk.bytes == one.dk.bytes) << "dk differs";
    EXPECT_TRUE(many.dv.bytes == one.dv.bytes) << "dv differs";
    EXPECT_EQ(many.stats.tiles_computed, one.stats.tiles_computed);
    EXPECT_EQ(many.stats.tiles_skipped, one.stats.tiles_skipped);
  }
}

// One kv head, one batch: the case the fused decomposition runs on a single
// worker. Lengths cross the 128-row tiles unevenly.
FeatureConfig Mqa(DType dtype) {
  FeatureConfig c;
  c.layout = Layout::kBNSD;
  c.dtype = dtype;
  c.b = 1;
  c.n1 = 3;
  c.n2 = 1;
  c.s1 = 300;
  c.s2 = 270;
  c.d = 40;
  c.dv = 24;
  c.mask = MaskForm::kNone;
  c.seed = 31;
  return c;
}

class BackwardSplitTest : public ::testing::TestWithParam<DType> {};

TEST_P(BackwardSplitTest, MqaWithoutMask) {
  CheckSplitMatchesFused(Mqa(GetParam()));
}

TEST_P(BackwardSplitTest, MqaWithAMaskAndFullyMaskedRows) {
  FeatureConfig config = Mqa(GetParam());
  config.mask = MaskForm::kPerHead;
  config.fully_masked_rows = 2;
  CheckSplitMatchesFused(config);
}

TEST_P(BackwardSplitTest, CausalSkipsTheSameTiles) {
  FeatureConfig config = Mqa(GetParam());
  config.s1 = 290;
  config.s2 = 290;
  config.sparse_mode = 3;  // rightDownCausal with the compressed mask.
  config.mask = MaskForm::kCompressed;
  CheckSplitMatchesFused(config);
}

TEST_P(BackwardSplitTest, BandWithEmptyRows) {
  FeatureConfig config = Mqa(GetParam());
  config.sparse_mode = 4;
  config.mask = MaskForm::kCompressed;
  config.pre_tokens = 200;
  config.next_tokens = -150;  // The first 150 query rows see nothing.
  CheckSplitMatchesFused(config);
}

TEST_P(BackwardSplitTest, SeededDropout) {
  FeatureConfig config = Mqa(GetParam());
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.85;
  config.dropout_seed = 99;
  CheckSplitMatchesFused(config);
}

TEST_P(BackwardSplitTest, GqaTwoBatches) {
  FeatureConfig config = Mqa(GetParam());
  config.b = 2;
  config.n1 = 4;
  config.n2 = 1;  // B * N2 = 2: split from 3 workers on.
  config.layout = Layout::kBSND;
  config.mask = MaskForm::kPerBatch;
  CheckSplitMatchesFused(config);
}

TEST_P(BackwardSplitTest, VarlenWithEmptyBatches) {
  FeatureConfig config = Mqa(GetParam());
  config.layout = Layout::kTND;
  config.n1 = 2;
  config.seq_q = {140, 0, 3, 260};
  config.seq_kv = {0, 70, 129, 200};
  config.sparse_mode = 0;
  config.mask = MaskForm::kTndPacked;
  CheckSplitMatchesFused(config);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, BackwardSplitTest, ComputeDTypes(),
                         DTypeParamName);

}  // namespace
}  // namespace attnserve::test
