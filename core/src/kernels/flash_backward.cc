#include <algorithm>
#include <cmath>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "kernels/score_tile.h"
#include "kernels/work_items.h"
#include "runtime/gemm.h"
#include "runtime/scratch.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread scratch of the backward kernel.
struct BackwardScratch {
  float* k;       // [S2, D]
  float* v;       // [S2, Dv]
  float* dk;      // [S2, D] accumulated over the group.
  float* dv;      // [S2, Dv]
  float* q;       // [tile_q, D]
  float* dq;      // [tile_q, D]
  float* dy;      // [tile_q, Dv]
  float* o;       // [tile_q, Dv]
  float* p;       // [tile_q, tile_kv] probabilities.
  float* ds;      // [tile_q, tile_kv] dP, then dS.
  float* rd;      // [tile_q] D_i = rowsum(dY * O).
  float* m;       // [tile_q] softmax_max.
  float* l;       // [tile_q] softmax_sum.
  float* row;     // [tile_kv] a pse row.
  uint8_t* keep;  // [tile_q * tile_kv] dropout keep bits.
};

BackwardScratch Carve(const AttentionGeometry& g, Scratch& arena) {
  const AttentionDims& d = g.dims;
  const int64_t tq = g.tiling.tile_q, tk = g.tiling.tile_kv;
  BackwardScratch s;
  s.k = arena.Take(d.s2 * d.d);
  s.v = arena.Take(d.s2 * d.dv);
  s.dk = arena.Take(d.s2 * d.d);
  s.dv = arena.Take(d.s2 * d.dv);
  s.q = arena.Take(tq * d.d);
  s.dq = arena.Take(tq * d.d);
  s.dy = arena.Take(tq * d.dv);
  s.o = arena.Take(tq * d.dv);
  s.p = arena.Take(tq * tk);
  s.ds = arena.Take(tq * tk);
  s.rd = arena.Take(tq);
  s.m = arena.Take(tq);
  s.l = arena.Take(tq);
  s.row = arena.Take(tk);
  s.keep = reinterpret_cast<uint8_t*>(arena.Take((tq * tk + 3) / 4));
  return s;
}

// Where a (b, n) head's dpse contributions go.
struct PseGrad {
  float* plane = nullptr;   // External pse: the (b or 0, n) plane.
  double* slope = nullptr;  // Slopes: the (b, n) accumulator.
};

PseGrad PseGradOf(const FlashBackwardArgs& a, const PseBias& pse, int64_t b,
                  int64_t n) {
  PseGrad grad;
  if (!pse.active()) return grad;
  const int64_t n1 = a.geo.dims.n1;
  if (pse.generated()) {
    grad.slope = a.dslope_partial + b * n1 + n;
  } else {
    const int64_t pb = a.geo.pse.stride_b == 0 ? 0 : b;
    grad.plane = a.dpse_partial + (pb * n1 + n) * pse.PartialPlaneFloats();
  }
  return grad;
}

// Loads the query side of tile (b, n, i0): Q, dY, O, max, sum and
// D_i = rowsum(dY * O).
void LoadQueryTile(const FlashBackwardArgs& a, const BackwardScratch& w,
                   int64_t b, int64_t n, int64_t i0, int64_t rows) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  LoadRows(a.q.data, a.q.Slice(b, n, span.q_start), i0, rows, w.q);
  LoadRows(a.dy.data, a.dy.Slice(b, n, span.q_start), i0, rows, w.dy);
  LoadRows(a.out.data, a.out.Slice(b, n, span.q_start), i0, rows, w.o);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx = g.SoftmaxIndex(b, n, i0 + r);
    w.m[r] = a.softmax_max[idx];
    w.l[r] = a.softmax_sum[idx];
    w.rd[r] = Dot(w.dy + r * d.dv, w.o + r * d.dv, d.dv);
  }
}

// Tile (i0, j0) of head (b, n) with its query side loaded: P' (dropped
// probabilities) into w.p and dS into w.ds. False when the mask excludes the
// whole tile. Every decomposition of the backward calls this in the same
// way, so P' and dS are the same bits whichever runs.
bool ScoreGradTile(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                   const BackwardScratch& w, int64_t b, int64_t n, int64_t i0,
                   int64_t rows, int64_t j0, int64_t cols, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  // P = exp(s - M) / L with s = scale Q Kᵀ + bias, masked cells 0.
  if (ScoreTile(g, mods, b, n, i0, rows, j0, cols, w.q, w.k, w.p, w.row,
                stats) == TileCoverage::kEmpty) {
    return false;
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.p + r * cols;
    ExpShiftSum(row, cols, w.m[r]);
    Scale(row, cols, 1.0f / w.l[r]);
  }
  const bool drop = mods.dropout.active();
  const float inv_kp = mods.dropout.inv_keep_prob();
  if (drop) mods.dropout.Fill(b, n, span, i0, rows, j0, cols, w.keep);
  // dP = dY V_jᵀ (· keep / keep_prob); dS = P (dP - D).
  GemmNT(rows, cols, d.dv, 1.0f, w.dy, d.dv, w.v + j0 * d.dv, d.dv, 0.0f, w.ds,
         cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = w.p + r * cols;
    float* ds = w.ds + r * cols;
    if (drop) TileDropout::Apply(ds, w.keep + r * cols, cols, inv_kp);
    const float rd = w.rd[r];
    for (int64_t c = 0; c < cols; ++c) ds[c] = p[c] * (ds[c] - rd);
  }
  // dV takes the dropped probabilities P' = P · keep / kp.
  if (drop) {
    for (int64_t r = 0; r < rows; ++r) {
      TileDropout::Apply(w.p + r * cols, w.keep + r * cols, cols, inv_kp);
    }
  }
  return true;
}

// dV_j += P'ᵀ dY;  dK_j += scale dSᵀ Q.
void AccumulateKvTile(const AttentionGeometry& g, const BackwardScratch& w,
                      int64_t rows, int64_t j0, int64_t cols) {
  const AttentionDims& d = g.dims;
  GemmTN(cols, d.dv, rows, 1.0f, w.p, cols, w.dy, d.dv, 1.0f, w.dv + j0 * d.dv,
         d.dv);
  GemmTN(cols, d.d, rows, g.scale, w.ds, cols, w.q, d.d, 1.0f, w.dk + j0 * d.d,
         d.d);
}

// dQ += scale dS K_j.
void AccumulateQueryTile(const AttentionGeometry& g, const BackwardScratch& w,
                         int64_t rows, int64_t j0, int64_t cols) {
  const AttentionDims& d = g.dims;
  GemmNN(rows, d.d, cols, g.scale, w.ds, cols, w.k + j0 * d.d, d.d, 1.0f, w.dq,
         d.d);
}

// One Sq tile of one query head: dQ for the tile, dK/dV (and dpse)
// accumulated.
void BackwardTile(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                  const BackwardScratch& w, int64_t b, int64_t n, int64_t i0,
                  int64_t rows, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  std::fill(w.dq, w.dq + rows * d.d, 0.0f);
  if (span.s2 == 0) {  // No keys: zero gradient for these queries.
    StoreRows(w.dq, a.dq.Slice(b, n, span.q_start), i0, rows,
              a.dq.mutable_data);
    return;
  }
  LoadQueryTile(a, w, b, n, i0, rows);
  const PseGrad pse_grad = PseGradOf(a, mods.pse, b, n);
  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (!ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols, stats)) continue;
    AccumulateKvTile(g, w, rows, j0, cols);
    AccumulateQueryTile(g, w, rows, j0, cols);
    if (mods.pse.active()) {
      mods.pse.AccumulateGrad(b, n, span.s1, i0, rows, j0, cols, w.ds, cols,
                              pse_grad.plane, pse_grad.slope);
    }
  }
  StoreRows(w.dq, a.dq.Slice(b, n, span.q_start), i0, rows, a.dq.mutable_data);
}

// All of batch b's work for kv head n2: the group's query heads and tiles in
// a fixed order, then dK/dV written once.
absl::Status BackwardKvHead(const FlashBackwardArgs& a,
                            const ScoreModifiers& mods,
                            const BackwardScratch& w, int64_t b, int64_t n2,
                            const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  LoadRows(a.k.data, a.k.Slice(b, n2, span.kv_start), 0, span.s2, w.k);
  LoadRows(a.v.data, a.v.Slice(b, n2, span.kv_start), 0, span.s2, w.v);
  std::fill(w.dk, w.dk + span.s2 * d.d, 0.0f);
  std::fill(w.dv, w.dv + span.s2 * d.dv, 0.0f);
  for (int64_t n = n2 * d.g; n < (n2 + 1) * d.g; ++n) {
    for (int64_t i0 = 0; i0 < span.s1; i0 += g.tiling.tile_q) {
      ATTN_RETURN_IF_ERROR(cancel.Check());
      const int64_t rows = std::min(g.tiling.tile_q, span.s1 - i0);
      BackwardTile(a, mods, w, b, n, i0, rows, stats);
    }
  }
  StoreRows(w.dk, a.dk.Slice(b, n2, span.kv_start), 0, span.s2,
            a.dk.mutable_data);
  StoreRows(w.dv, a.dv.Slice(b, n2, span.kv_start), 0, span.s2,
            a.dv.mutable_data);
  return absl::OkStatus();
}

// Split decomposition, phase 1: dK/dV of kv tile j0 of kv head (b, n2),
// summed over the group's query heads and tiles in the fused order.
absl::Status KvTileItem(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                        const BackwardScratch& w, int64_t b, int64_t n2,
                        int64_t j0, const CancelToken& cancel,
                        RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
  LoadRows(a.k.data, a.k.Slice(b, n2, span.kv_start), j0, cols, w.k + j0 * d.d);
  LoadRows(a.v.data, a.v.Slice(b, n2, span.kv_start), j0, cols,
           w.v + j0 * d.dv);
  std::fill(w.dk + j0 * d.d, w.dk + (j0 + cols) * d.d, 0.0f);
  std::fill(w.dv + j0 * d.dv, w.dv + (j0 + cols) * d.dv, 0.0f);
  for (int64_t n = n2 * d.g; n < (n2 + 1) * d.g; ++n) {
    for (int64_t i0 = 0; i0 < span.s1; i0 += g.tiling.tile_q) {
      ATTN_RETURN_IF_ERROR(cancel.Check());
      const int64_t rows = std::min(g.tiling.tile_q, span.s1 - i0);
      LoadQueryTile(a, w, b, n, i0, rows);
      if (ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols, stats)) {
        AccumulateKvTile(g, w, rows, j0, cols);
      }
    }
  }
  StoreRows(w.dk + j0 * d.d, a.dk.Slice(b, n2, span.kv_start), j0, cols,
            a.dk.mutable_data);
  StoreRows(w.dv + j0 * d.dv, a.dv.Slice(b, n2, span.kv_start), j0, cols,
            a.dv.mutable_data);
  return absl::OkStatus();
}

// Split decomposition, phase 2: dQ of query tile (b, n, i0), summed over the
// kv tiles in the fused order.
void QueryTileItem(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                   const BackwardScratch& w, int64_t b, int64_t n, int64_t i0) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t rows = std::min(g.tiling.tile_q, span.s1 - i0);
  std::fill(w.dq, w.dq + rows * d.d, 0.0f);
  if (span.s2 > 0) LoadQueryTile(a, w, b, n, i0, rows);
  RunStats counted_in_phase_1;
  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols,
                      &counted_in_phase_1)) {
      AccumulateQueryTile(g, w, rows, j0, cols);
    }
  }
  StoreRows(w.dq, a.dq.Slice(b, n, span.q_start), i0, rows, a.dq.mutable_data);
}

}  // namespace

// Two decompositions that give the same bits:
//  - fused: work items are (b, n2); one worker owns a kv head's dK/dV and
//    walks the group's query heads and tiles in a fixed order, computing dQ
//    on the way. An external pse shared by the batches makes the items n2
//    alone (batches in order inside), so that its dpse plane is also summed
//    by one worker in a fixed order.
//  - split, when there are fewer kv heads than workers and no dpse to sum:
//    items (b, n2, kv tile) compute dK/dV, then items (b, n1, query tile)
//    compute dQ. Each output sum runs in the fused order, and the tile
//    products are the same calls on the same data, so the result does not
//    depend on the decomposition or on the number of workers. The score and
//    dP products run twice (7 tile products per tile instead of 5), which
//    pays once two or more workers share what one would do alone.
absl::Status FlashBackward(const FlashBackwardArgs& a, float* scratch,
                           size_t scratch_floats, ComputePool& pool,
                           const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const int slots = g.tiling.threads;
  const size_t per_slot = scratch_floats / static_cast<size_t>(slots);
  std::vector<BackwardScratch> scratch_of(static_cast<size_t>(slots));
  std::vector<RunStats> stats_of(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    Scratch arena(scratch + per_slot * static_cast<size_t>(i), per_slot);
    scratch_of[static_cast<size_t>(i)] = Carve(g, arena);
  }
  const ScoreModifiers mods(g);
  absl::Status status;
  if (UseSplitBackward(g)) {
    const QueryTileItems kv_items(g.batches, d.n2, g.tiling.tile_kv,
                                  TileSide::kKv);
    status =
        pool.ParallelFor(kv_items.size(), slots, [&](int64_t item, int slot) {
          const QueryTileItems::Item it = kv_items.at(item);
          return KvTileItem(a, mods, scratch_of[static_cast<size_t>(slot)],
                            it.b, it.n, it.i0, cancel,
                            &stats_of[static_cast<size_t>(slot)]);
        });
    if (status.ok()) {
      // Phase 1 left kv tiles in the slots' k / v: every slot starts empty.
      std::vector<HeldKvHead> held(static_cast<size_t>(slots));
      const QueryTileItems q_items(g.batches, d.n1, g.tiling.tile_q);
      status =
          pool.ParallelFor(q_items.size(), slots, [&](int64_t item, int slot) {
            ATTN_RETURN_IF_ERROR(cancel.Check());
            const QueryTileItems::Item it = q_items.at(item);
            const BackwardScratch& w = scratch_of[static_cast<size_t>(slot)];
            const BatchSpan& span = g.batches[static_cast<size_t>(it.b)];
            held[static_cast<size_t>(slot)].Hold(a.k, a.v, it.b, it.n / d.g,
                                                 span, w.k, w.v);
            QueryTileItem(a, mods, w, it.b, it.n, it.i0);
            return absl::OkStatus();
          });
    }
  } else {
    const bool shared_pse =
        g.pse.kind == PseSpec::Kind::kExternal && g.pse.stride_b == 0;
    const int64_t items = shared_pse ? d.n2 : d.b * d.n2;
    status = pool.ParallelFor(items, slots, [&](int64_t item, int slot) {
      const BackwardScratch& w = scratch_of[static_cast<size_t>(slot)];
      RunStats* st = &stats_of[static_cast<size_t>(slot)];
      if (shared_pse) {
        for (int64_t b = 0; b < d.b; ++b) {
          ATTN_RETURN_IF_ERROR(BackwardKvHead(a, mods, w, b, item, cancel, st));
        }
        return absl::OkStatus();
      }
      return BackwardKvHead(a, mods, w, item / d.n2, item % d.n2, cancel, st);
    });
  }
  for (const RunStats& s : stats_of) {
    stats->tiles_computed += s.tiles_computed;
    stats->tiles_skipped += s.tiles_skipped;
  }
  return status;
}

bool UseSplitBackward(const AttentionGeometry& g) {
  return g.pse.kind == PseSpec::Kind::kNone &&
         g.dims.b * g.dims.n2 < g.tiling.threads;
}

}  // namespace attnserve::core
