// The scores of one tile as the forward and the backward both compute them:
// s = scale · Q_i K_jᵀ + bias, with the cells the mask drops at -inf, after
// skipping the tile when the mask drops all of it. Sharing the code keeps the
// two directions' scores the same bits, which the backward's recomputation
// of P relies on.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_SCORE_TILE_H_
#define ATTNSERVE_CORE_SRC_KERNELS_SCORE_TILE_H_

#include <cstdint>

#include "attnserve/core/run_stats.h"
#include "kernels/kernel_args.h"
#include "kernels/pse_bias.h"
#include "kernels/tile_dropout.h"
#include "kernels/tile_mask.h"
#include "kernels/tile_products.h"

namespace attnserve::core {

// The score modifiers of one request.
struct ScoreModifiers {
  explicit ScoreModifiers(const AttentionGeometry& g)
      : mask(g.mask, g.mask_data),
        pse(g.pse, g.pse_data),
        dropout(g.dropout, g.drop_mask_data) {}

  TileMask mask;
  PseBias pse;
  TileDropout dropout;
};

// What ScoreTile produced: the tile's coverage and the factor the scores
// still need (1 when `s` holds the final scores). bf16 products leave the
// scale to the fused softmax rows when nothing comes between the product
// and the softmax but the mask (no pse) and the scale is positive (so that
// -inf stays -inf and the row maximum scales with it).
struct ScoredTile {
  TileCoverage cover = TileCoverage::kEmpty;
  float pending_scale = 1.0f;
};

// Tile rows [i0, i0 + rows) x columns [j0, j0 + cols) of head (b, n): the
// scores into `s` (row stride ScoreStride(g.tiling, cols)) from the query
// tile and the head's keys in `op`: s = scale · Q K_jᵀ + bias, with the
// cells the mask drops at -inf (times 1 / pending_scale, see ScoredTile).
// `pse_row` is scratch of `cols` floats. kEmpty tiles are counted as
// skipped and `s` is left alone.
inline ScoredTile ScoreTile(const AttentionGeometry& g,
                            const ScoreModifiers& mods, int64_t b, int64_t n,
                            int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                            const TileOperands& op, float* s, float* pse_row,
                            RunStats* stats) {
  ScoredTile out;
  out.cover = mods.mask.Classify(b, i0, rows, j0, cols);
  if (out.cover == TileCoverage::kEmpty) {
    ++stats->tiles_skipped;
    return out;
  }
  ++stats->tiles_computed;
  const bool defer = UsesBf16(g.tiling) && !mods.pse.active() && g.scale > 0.0f;
  ScoreProduct(g.tiling, g.dims, g.scale, !defer, op, rows, j0, cols, s);
  if (defer) out.pending_scale = g.scale;
  const int64_t lds = ScoreStride(g.tiling, cols);
  if (mods.pse.active()) {
    const int64_t s1 = g.batches[static_cast<size_t>(b)].s1;
    mods.pse.Add(b, n, s1, i0, rows, j0, cols, s, lds, pse_row);
  }
  if (out.cover == TileCoverage::kPartial) {
    mods.mask.Apply(b, n, i0, rows, j0, cols, s, lds);
  }
  return out;
}

// The same for a stacked tile of `heads` query heads n0, n0 + 1, ... of one
// kv head, each with all `s1` rows of batch b (stacked row r is row r % s1
// of head n0 + r / s1): columns [j0, j0 + cols), with the tile's keys at
// rows [kv_row, kv_row + cols) of the operands. The coverage is the same
// for every head (the band depends on the batch only); the bias and the
// mask are applied head by head. Counts one tile per head.
inline ScoredTile ScoreStackedTile(const AttentionGeometry& g,
                                   const ScoreModifiers& mods, int64_t b,
                                   int64_t n0, int64_t heads, int64_t s1,
                                   int64_t j0, int64_t cols, int64_t kv_row,
                                   const TileOperands& op, float* s,
                                   float* pse_row, RunStats* stats) {
  ScoredTile out;
  out.cover = mods.mask.Classify(b, 0, s1, j0, cols);
  if (out.cover == TileCoverage::kEmpty) {
    stats->tiles_skipped += heads;
    return out;
  }
  stats->tiles_computed += heads;
  const bool defer = UsesBf16(g.tiling) && !mods.pse.active() && g.scale > 0.0f;
  ScoreProduct(g.tiling, g.dims, g.scale, !defer, op, heads * s1, kv_row, cols,
               s);
  if (defer) out.pending_scale = g.scale;
  const int64_t lds = ScoreStride(g.tiling, cols);
  for (int64_t h = 0; h < heads; ++h) {
    float* sh = s + h * s1 * lds;
    if (mods.pse.active()) {
      mods.pse.Add(b, n0 + h, s1, 0, s1, j0, cols, sh, lds, pse_row);
    }
    if (out.cover == TileCoverage::kPartial) {
      mods.mask.Apply(b, n0 + h, 0, s1, j0, cols, sh, lds);
    }
  }
  return out;
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_SCORE_TILE_H_
