// Shapes at the kernels' tile edges (sizes read from the plan), extreme head
// dims, bands that skip whole tiles, and fully masked rows and batches.
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

// Forward and backward of `config` against the reference.
void CheckCase(const CaseConfig& config, int threads = 1) {
  SCOPED_TRACE(absl::StrCat(CaseName(config), " s1=", config.dims.s1,
                            " s2=", config.dims.s2, " d=", config.dims.d,
                            " threads=", threads));
  AttentionCase c(config);
  const Tolerances tol = TolerancesFor(config.dtype);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args(), threads));
  ExpectForwardMatches(c, fwd, tol);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult grad,
                            RunBackward(c.backward_args(&fwd), threads));
  ExpectBackwardMatches(c, grad, tol);
}

CaseConfig Small(DType dtype, int64_t s1, int64_t s2, int64_t d = 16) {
  CaseConfig c;
  c.layout = Layout::kBNSD;
  c.dtype = dtype;
  c.dims = RefDims{1, 2, 1, s1, s2, d, d};
  c.mask = MaskKind::kPerHead;
  c.masked_fraction = 0.2;
  c.fully_masked_rows = 0;
  c.fully_masked_cols = 0;
  c.seed = static_cast<uint64_t>(s1 * 1000 + s2);
  return c;
}

struct Tiles {
  int64_t q = 0;
  int64_t kv = 0;
};

// The tile sizes the plan picks for `config`.
Tiles PlannedTiles(const CaseConfig& config) {
  AttentionCase c(config);
  absl::StatusOr<core::ForwardPlan> plan = core::PlanForward(c.forward_args());
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (!plan.ok()) return Tiles{1, 1};
  return Tiles{plan->tiling.tile_q, plan->tiling.tile_kv};
}

// 1, t - 1, t, t + 1 and 2t + 1 (without duplicates or zero).
std::vector<int64_t> EdgeLengths(int64_t tile) {
  std::set<int64_t> s = {1, tile - 1, tile, tile + 1, 2 * tile + 1};
  s.erase(0);
  return {s.begin(), s.end()};
}

class TilingTest : public ::testing::TestWithParam<DType> {};

TEST_P(TilingTest, LengthsAroundTileEdges) {
  const Tiles tiles = PlannedTiles(Small(GetParam(), 256, 256));
  ASSERT_GT(tiles.q, 0);
  ASSERT_GT(tiles.kv, 0);
  for (int64_t s1 : EdgeLengths(tiles.q)) {
    for (int64_t s2 : EdgeLengths(tiles.kv)) {
      const CaseConfig config = Small(GetParam(), s1, s2);
      // The tiling must not depend on the lengths in a way that defeats
      // the edges chosen above.
      const Tiles here = PlannedTiles(config);
      EXPECT_EQ(here.q, tiles.q) << "s1=" << s1 << " s2=" << s2;
      EXPECT_EQ(here.kv, tiles.kv) << "s1=" << s1 << " s2=" << s2;
      CheckCase(config);
    }
  }
}

TEST_P(TilingTest, ExtremeHeadDims) {
  for (int64_t d : {1, 128, 256}) {
    CaseConfig config = Small(GetParam(), 37, 53, d);
    config.mask = MaskKind::kFull2D;
    config.fully_masked_rows = 2;
    CheckCase(config);
  }
  // D = 1 with a differing Dv, and the reverse.
  CaseConfig wide_v = Small(GetParam(), 37, 53, 1);
  wide_v.dims.dv = 128;
  CheckCase(wide_v);
  CaseConfig narrow_v = Small(GetParam(), 37, 53, 256);
  narrow_v.dims.dv = 1;
  CheckCase(narrow_v);
}

TEST_P(TilingTest, BandsThatSkipWholeTiles) {
  const Tiles tiles = PlannedTiles(Small(GetParam(), 256, 256));
  const int64_t s1 = 3 * tiles.q + 5, s2 = 3 * tiles.kv + 7;
  struct Band {
    int64_t pre, next;
  };
  for (const Band& band :
       {Band{0, 0}, Band{2, 1}, Band{tiles.kv + 5, -(tiles.kv - 3)},
        Band{-(tiles.kv + 1), tiles.kv + 4}, Band{s2, -1}}) {
    CaseConfig config = Small(GetParam(), s1, s2, 8);
    config.mask = MaskKind::kNone;
    config.pre_tokens = band.pre;
    config.next_tokens = band.next;
    SCOPED_TRACE(absl::StrCat("pre=", band.pre, " next=", band.next));
    CheckCase(config);
    // The same band with an agreeing mask tensor, on two threads.
    config.mask = MaskKind::kFull2D;
    CheckCase(config, 2);
  }
}

TEST_P(TilingTest, FullyMaskedRowsGiveTheInvalidLine) {
  const Tiles tiles = PlannedTiles(Small(GetParam(), 256, 256));
  CaseConfig config = Small(GetParam(), tiles.q + 3, 2 * tiles.kv + 1);
  config.mask = MaskKind::kPerHead;
  config.fully_masked_rows = 5;
  config.fully_masked_cols = 3;
  AttentionCase probe(config);
  ASSERT_TRUE(std::count(probe.reference_forward().fully_masked.begin(),
                         probe.reference_forward().fully_masked.end(),
                         true) > 0);
  CheckCase(config);
}

TEST_P(TilingTest, FullyMaskedBatch) {
  const Tiles tiles = PlannedTiles(Small(GetParam(), 256, 256));
  for (MaskKind kind : {MaskKind::kPerBatch, MaskKind::kPerHead}) {
    CaseConfig config = Small(GetParam(), tiles.q + 1, tiles.kv + 2);
    config.dims.b = 3;
    config.mask = kind;
    config.fully_masked_batch = 1;
    CheckCase(config, 2);
  }
}

TEST_P(TilingTest, EverythingMasked) {
  CaseConfig config = Small(GetParam(), 37, 53);
  config.mask = MaskKind::kShared;
  config.masked_fraction = 1.0;
  AttentionCase probe(config);
  for (bool masked : probe.reference_forward().fully_masked) {
    ASSERT_TRUE(masked);
  }
  CheckCase(config);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, TilingTest, ComputeDTypes(),
                         DTypeParamName);

}  // namespace
}  // namespace attnserve::test
