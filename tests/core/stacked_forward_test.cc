// The stacked forward (all G query heads of a kv head as one query tile,
// K/V streamed a tile at a time: G * Sq <= tile_q, the decode-like shapes)
// against the float64 reference: every layout, FLOAT32 / FLOAT16 /
// BFLOAT16, MHA, GQA and MQA, Sq on both sides of the stacking limit
// (G * Sq = tile_q - G, tile_q, tile_q + G), Skv over two kv tiles with a
// partial last one, each mask form and sparse mode it accepts, pse and
// dropout; and the same bits for every thread count. Each case also runs
// the backward with the forward's residuals.
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "kernels/flash_attention.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

constexpr int64_t kTileQ = 128;  // The plan's query tile.

// Query heads x kv heads: MHA 3/3 (G = 1), GQA 8/2 (G = 4), MQA 8/1 (G = 8).
struct Heads {
  const char* name;
  int64_t n1, n2;
};
constexpr Heads kHeads[] = {{"Mha", 3, 3}, {"Gqa", 8, 2}, {"Mqa", 8, 1}};

// Sq of a stacking-limit position for G query heads per kv head.
enum class SqAt { kOne, kBelowLimit, kAtLimit, kAboveLimit };
constexpr SqAt kSqAt[] = {SqAt::kOne, SqAt::kBelowLimit, SqAt::kAtLimit,
                          SqAt::kAboveLimit};

int64_t SqFor(SqAt at, int64_t g) {
  switch (at) {
    case SqAt::kOne:
      return 1;
    case SqAt::kBelowLimit:
      return kTileQ / g - 1;
    case SqAt::kAtLimit:
      return kTileQ / g;
    case SqAt::kAboveLimit:
      return kTileQ / g + 1;
  }
  return 1;
}

const char* SqAtName(SqAt at) {
  switch (at) {
    case SqAt::kOne:
      return "Sq1";
    case SqAt::kBelowLimit:
      return "BelowLimit";
    case SqAt::kAtLimit:
      return "AtLimit";
    case SqAt::kAboveLimit:
      return "AboveLimit";
  }
  return "";
}

// Whether the kernel runs the case stacked (the decision under test).
bool Stacked(int64_t g, int64_t s1) {
  core::AttentionDims dims;
  dims.g = g;
  dims.s1 = s1;
  core::Tiling tiling;
  tiling.tile_q = kTileQ;
  return core::UseStackedForward(dims, tiling);
}

// B = 2 batches (TND: lengths sq and sq - 1 / 300 and 230), Skv = 300
// (two full kv tiles and a partial one), D = 40, Dv = 24.
FeatureConfig Config(Layout layout, DType dtype, const Heads& heads,
                     int64_t sq) {
  FeatureConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.n1 = heads.n1;
  c.n2 = heads.n2;
  c.d = 40;
  c.dv = 24;
  c.b = 2;
  c.s1 = sq;
  c.s2 = 300;
  if (layout == Layout::kTND) {
    c.seq_q = {sq, sq > 1 ? sq - 1 : 1};
    c.seq_kv = {300, 230};
  }
  c.seed = 500 + static_cast<uint64_t>(layout) * 97 +
           static_cast<uint64_t>(dtype) * 13 + static_cast<uint64_t>(sq);
  return c;
}

using StackedParam = std::tuple<Layout, DType, size_t, SqAt>;

class StackedForwardTest : public ::testing::TestWithParam<StackedParam> {
 protected:
  const Heads& heads() const { return kHeads[std::get<2>(GetParam())]; }
  int64_t sq() const {
    return SqFor(std::get<3>(GetParam()), heads().n1 / heads().n2);
  }
  FeatureConfig Base() const {
    return Config(std::get<0>(GetParam()), std::get<1>(GetParam()), heads(),
                  sq());
  }
};

TEST_P(StackedForwardTest, StackedExactlyUpToTheLimit) {
  const int64_t g = heads().n1 / heads().n2;
  EXPECT_EQ(Stacked(g, sq()), std::get<3>(GetParam()) != SqAt::kAboveLimit);
}

TEST_P(StackedForwardTest, NoMask) { CheckBothDirections(Base()); }

TEST_P(StackedForwardTest, BottomRightCausal) {
  FeatureConfig c = Base();
  c.sparse_mode = 3;
  c.mask = MaskForm::kCompressed;
  CheckBothDirections(c);
}

TEST_P(StackedForwardTest, BandWithoutMaskTensor) {
  FeatureConfig c = Base();
  c.pre_tokens = 40;
  c.next_tokens = 120;  // No row keeps a key of the last kv tile: skipped.
  CheckBothDirections(c);
  FeatureCase fc(c);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(fc.forward_args(), 1));
  EXPECT_GT(fwd.stats.tiles_skipped, 0);
}

TEST_P(StackedForwardTest, MaskTensor) {
  FeatureConfig c = Base();
  c.mask = c.layout == Layout::kTND ? MaskForm::kTndPacked : MaskForm::kPerHead;
  c.fully_masked_rows = 1;
  CheckBothDirections(c);
}

// TND: dropout alone (generated ALiBi needs Sq == Skv there).
TEST_P(StackedForwardTest, PseAndDropout) {
  FeatureConfig c = Base();
  if (c.layout != Layout::kTND) c.pse = PseForm::kFull;
  c.dropout = DropoutKind::kSeed;
  c.keep_prob = 0.8;
  c.dropout_seed = 99;
  CheckBothDirections(c);
}

TEST_P(StackedForwardTest, SameBitsOnEveryThreadCount) {
  FeatureConfig c = Base();
  c.mask = c.layout == Layout::kTND ? MaskForm::kTndPacked : MaskForm::kPerHead;
  FeatureCase fc(c);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult one,
                            RunForward(fc.forward_args(), 1));
  for (int threads : {2, 3}) {
    SCOPED_TRACE(threads);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult many,
                              RunForward(fc.forward_args(), threads));
    EXPECT_EQ(many.attention_out.bytes, one.attention_out.bytes);
    EXPECT_EQ(many.softmax_max.bytes, one.softmax_max.bytes);
    EXPECT_EQ(many.softmax_sum.bytes, one.softmax_sum.bytes);
    EXPECT_EQ(many.stats.tiles_computed, one.stats.tiles_computed);
    EXPECT_EQ(many.stats.tiles_skipped, one.stats.tiles_skipped);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, StackedForwardTest,
    ::testing::Combine(
        ::testing::Values(Layout::kBSH, Layout::kSBH, Layout::kBSND,
                          Layout::kBNSD, Layout::kTND),
        ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
        ::testing::Range<size_t>(0, 3), ::testing::ValuesIn(kSqAt)),
    [](const ::testing::TestParamInfo<StackedParam>& info) {
      return absl::StrCat(core::LayoutName(std::get<0>(info.param)), "_",
                          core::DTypeName(std::get<1>(info.param)), "_",
                          kHeads[std::get<2>(info.param)].name, "_",
                          SqAtName(std::get<3>(info.param)));
    });

}  // namespace
}  // namespace attnserve::test
