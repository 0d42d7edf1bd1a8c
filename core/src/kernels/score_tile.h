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
#include "runtime/gemm.h"

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

// Tile rows [i0, i0 + rows) x columns [j0, j0 + cols) of head (b, n): the
// scores into `s` (row stride `cols`) from the query tile `q` ([rows, D])
// and the head's keys `k` ([Skv_b, D]). `pse_row` is scratch of `cols`
// floats. Returns the tile's coverage; kEmpty tiles are counted as skipped
// and `s` is left alone.
inline TileCoverage ScoreTile(const AttentionGeometry& g,
                              const ScoreModifiers& mods, int64_t b, int64_t n,
                              int64_t i0, int64_t rows, int64_t j0,
                              int64_t cols, const float* q, const float* k,
                              float* s, float* pse_row, RunStats* stats) {
  const TileCoverage cover = mods.mask.Classify(b, i0, rows, j0, cols);
  if (cover == TileCoverage::kEmpty) {
    ++stats->tiles_skipped;
    return cover;
  }
  ++stats->tiles_computed;
  const int64_t d = g.dims.d;
  GemmNT(rows, cols, d, g.scale, q, d, k + j0 * d, d, 0.0f, s, cols);
  if (mods.pse.active()) {
    const int64_t s1 = g.batches[static_cast<size_t>(b)].s1;
    mods.pse.Add(b, n, s1, i0, rows, j0, cols, s, cols, pse_row);
  }
  if (cover == TileCoverage::kPartial) {
    mods.mask.Apply(b, n, i0, rows, j0, cols, s, cols);
  }
  return cover;
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_SCORE_TILE_H_
