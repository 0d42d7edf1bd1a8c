// Tiles wholly outside the keep predicate are skipped: on long causal and
// band requests the RunStats of the forward and the backward report exactly
// the tiles of the plan's tile grid that keep at least one cell as
// computed, the others as skipped (about half for causal), and the results
// still match the reference.
//
// Counting unit: one tile is (batch, query head, query tile, key tile) of
// tile_q x tile_kv cells read from the plan; in TND each batch has its own
// grid starting at its first token.
#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

struct TileCounts {
  int64_t computed = 0;
  int64_t skipped = 0;
};

// The tiles of `c` that keep a cell, by brute force over the predicate.
TileCounts ExpectedTiles(const FeatureCase& c, int64_t tile_q,
                         int64_t tile_kv) {
  TileCounts t;
  for (int64_t b = 0; b < c.batches(); ++b) {
    for (int64_t n = 0; n < c.config().n1; ++n) {
      for (int64_t q0 = 0; q0 < c.sq(b); q0 += tile_q) {
        for (int64_t k0 = 0; k0 < c.skv(b); k0 += tile_kv) {
          bool any = false;
          for (int64_t i = q0; i < std::min(q0 + tile_q, c.sq(b)) && !any;
               ++i) {
            for (int64_t j = k0; j < std::min(k0 + tile_kv, c.skv(b)); ++j) {
              if (c.Keep(b, n, i, j)) {
                any = true;
                break;
              }
            }
          }
          ++(any ? t.computed : t.skipped);
        }
      }
    }
  }
  return t;
}

struct SkipCase {
  std::string name;
  FeatureConfig config;
  double min_skipped_fraction;
};

FeatureConfig Long(int64_t mode, int64_t s1, int64_t s2) {
  FeatureConfig c;
  c.layout = Layout::kBNSD;
  c.b = 1;
  c.n1 = 2;
  c.n2 = 1;
  c.s1 = s1;
  c.s2 = s2;
  c.d = 16;
  c.dv = 16;
  c.sparse_mode = mode;
  return c;
}

std::vector<SkipCase> Cases() {
  std::vector<SkipCase> v;
  {
    FeatureConfig c = Long(0, 1000, 1000);
    c.next_tokens = 0;
    v.push_back({"Mode0NextZero", c, 0.4});
  }
  v.push_back({"Mode2", Long(2, 1000, 1000), 0.4});
  v.push_back({"Mode3KeysLonger", Long(3, 700, 1000), 0.2});
  {
    FeatureConfig c = Long(4, 900, 1000);
    c.pre_tokens = 64;
    c.next_tokens = 0;
    v.push_back({"Mode4Band", c, 0.6});
  }
  {
    FeatureConfig c = Long(6, 1000, 1000);
    c.prefix = {100};
    v.push_back({"Mode6Prefix", c, 0.3});
  }
  {
    FeatureConfig c = Long(2, 0, 0);
    c.layout = Layout::kTND;
    c.seq_q = {600, 0, 700};
    c.seq_kv = {600, 50, 700};
    v.push_back({"VarlenMode2", c, 0.35});
  }
  return v;
}

// Each case in FLOAT16 (fp32 tile products) and BFLOAT16 (bf16 tile
// products where the host has them).
class TileSkipTest
    : public ::testing::TestWithParam<std::tuple<size_t, DType>> {
 protected:
  SkipCase Case() const {
    SkipCase k = Cases()[std::get<0>(GetParam())];
    k.config.dtype = std::get<1>(GetParam());
    return k;
  }
};

TEST_P(TileSkipTest, ForwardSkipsExactlyTheTilesOutsideThePredicate) {
  const SkipCase k = Case();
  FeatureCase c(k.config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan plan,
                            core::PlanForward(c.forward_args()));
  const TileCounts want =
      ExpectedTiles(c, plan.tiling.tile_q, plan.tiling.tile_kv);
  const double fraction = static_cast<double>(want.skipped) /
                          static_cast<double>(want.skipped + want.computed);
  ASSERT_GE(fraction, k.min_skipped_fraction)
      << "the case does not exercise skipping with tiles " << plan.tiling.tile_q
      << "x" << plan.tiling.tile_kv;
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args()));
  EXPECT_EQ(fwd.stats.tiles_computed, want.computed);
  EXPECT_EQ(fwd.stats.tiles_skipped, want.skipped);
  ExpectForwardMatches(c, fwd, FeatureTolerances(k.config));
}

TEST_P(TileSkipTest, BackwardSkipsExactlyTheTilesOutsideThePredicate) {
  const SkipCase k = Case();
  FeatureCase c(k.config);
  const core::BackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardPlan plan, core::PlanBackward(args));
  const TileCounts want =
      ExpectedTiles(c, plan.tiling.tile_q, plan.tiling.tile_kv);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad, RunBackward(args));
  EXPECT_EQ(grad.stats.tiles_computed, want.computed);
  EXPECT_EQ(grad.stats.tiles_skipped, want.skipped);
  ExpectBackwardMatches(c, grad, FeatureTolerances(k.config),
                        Residuals::kReference);
}

INSTANTIATE_TEST_SUITE_P(
    Long, TileSkipTest,
    ::testing::Combine(::testing::Range<size_t>(0, 6),
                       ::testing::Values(DType::kFloat16, DType::kBFloat16)),
    [](const ::testing::TestParamInfo<std::tuple<size_t, DType>>& info) {
      return Cases()[std::get<0>(info.param)].name + "_" +
             core::DTypeName(std::get<1>(info.param));
    });

}  // namespace
}  // namespace attnserve::test
