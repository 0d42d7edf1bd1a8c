#include <algorithm>
#include <cmath>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "kernels/tile_mask.h"
#include "runtime/gemm.h"
#include "runtime/scratch.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread scratch of the backward kernel.
struct BackwardScratch {
  float* k;   // [S2, D]
  float* v;   // [S2, Dv]
  float* dk;  // [S2, D] accumulated over the group.
  float* dv;  // [S2, Dv]
  float* q;   // [tile_q, D]
  float* dq;  // [tile_q, D]
  float* dy;  // [tile_q, Dv]
  float* o;   // [tile_q, Dv]
  float* p;   // [tile_q, tile_kv] probabilities.
  float* ds;  // [tile_q, tile_kv] dP, then dS.
  float* rd;  // [tile_q] D_i = rowsum(dY * O).
  float* m;   // [tile_q] softmax_max.
  float* l;   // [tile_q] softmax_sum.
};

BackwardScratch Carve(const FlashBackwardArgs& a, Scratch& arena) {
  const AttentionDims& d = a.dims;
  const int64_t tq = a.tiling.tile_q, tk = a.tiling.tile_kv;
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
  return s;
}

// One Sq tile of one query head: dQ for the tile, dK/dV accumulated.
void BackwardTile(const FlashBackwardArgs& a, const TileMask& mask,
                  const BackwardScratch& w, int64_t b, int64_t n, int64_t i0,
                  int64_t rows, RunStats* stats) {
  const AttentionDims& d = a.dims;
  LoadRows(a.q.data, a.q.Slice(b, n), i0, rows, w.q);
  LoadRows(a.dy.data, a.dy.Slice(b, n), i0, rows, w.dy);
  LoadRows(a.out.data, a.out.Slice(b, n), i0, rows, w.o);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx = SoftmaxIndex(d, b, n, i0 + r);
    w.m[r] = a.softmax_max[idx];
    w.l[r] = a.softmax_sum[idx];
    w.rd[r] = Dot(w.dy + r * d.dv, w.o + r * d.dv, d.dv);
  }
  std::fill(w.dq, w.dq + rows * d.d, 0.0f);

  for (int64_t j0 = 0; j0 < d.s2; j0 += a.tiling.tile_kv) {
    const int64_t cols = std::min(a.tiling.tile_kv, d.s2 - j0);
    const TileCoverage cover = mask.Classify(i0, rows, j0, cols);
    if (cover == TileCoverage::kEmpty) {
      ++stats->tiles_skipped;
      continue;
    }
    ++stats->tiles_computed;
    // P = exp(scale * Q Kᵀ - M) / L, masked cells 0.
    GemmNT(rows, cols, d.d, a.scale, w.q, d.d, w.k + j0 * d.d, d.d, 0.0f, w.p,
           cols);
    if (cover == TileCoverage::kPartial) {
      mask.Apply(b, n, i0, rows, j0, cols, w.p, cols);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* row = w.p + r * cols;
      ExpShiftSum(row, cols, w.m[r]);
      Scale(row, cols, 1.0f / w.l[r]);
    }
    // dV_j += Pᵀ dY.
    GemmTN(cols, d.dv, rows, 1.0f, w.p, cols, w.dy, d.dv, 1.0f,
           w.dv + j0 * d.dv, d.dv);
    // dP = dY V_jᵀ; dS = P (dP - D).
    GemmNT(rows, cols, d.dv, 1.0f, w.dy, d.dv, w.v + j0 * d.dv, d.dv, 0.0f,
           w.ds, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = w.p + r * cols;
      float* ds = w.ds + r * cols;
      const float rd = w.rd[r];
      for (int64_t c = 0; c < cols; ++c) ds[c] = p[c] * (ds[c] - rd);
    }
    // dQ += scale dS K_j;  dK_j += scale dSᵀ Q.
    GemmNN(rows, d.d, cols, a.scale, w.ds, cols, w.k + j0 * d.d, d.d, 1.0f,
           w.dq, d.d);
    GemmTN(cols, d.d, rows, a.scale, w.ds, cols, w.q, d.d, 1.0f,
           w.dk + j0 * d.d, d.d);
  }
  StoreRows(w.dq, a.dq.Slice(b, n), i0, rows, a.dq.mutable_data);
}

}  // namespace

// Work items are (b, n2): one worker owns a kv head's dK/dV and walks the
// group's query heads and tiles in a fixed order, so the sums are the same
// whatever the number of workers.
absl::Status FlashBackward(const FlashBackwardArgs& a, float* scratch,
                           size_t scratch_floats, ComputePool& pool,
                           const CancelToken& cancel, RunStats* stats) {
  const AttentionDims& d = a.dims;
  const int slots = a.tiling.threads;
  const size_t per_slot = scratch_floats / static_cast<size_t>(slots);
  std::vector<BackwardScratch> scratch_of(static_cast<size_t>(slots));
  std::vector<RunStats> stats_of(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    Scratch arena(scratch + per_slot * static_cast<size_t>(i), per_slot);
    scratch_of[static_cast<size_t>(i)] = Carve(a, arena);
  }
  const TileMask mask(a.mask, a.mask_data);
  const absl::Status status =
      pool.ParallelFor(d.b * d.n2, slots, [&](int64_t item, int slot) {
        const BackwardScratch& w = scratch_of[static_cast<size_t>(slot)];
        RunStats* st = &stats_of[static_cast<size_t>(slot)];
        const int64_t b = item / d.n2, n2 = item % d.n2;
        LoadRows(a.k.data, a.k.Slice(b, n2), 0, d.s2, w.k);
        LoadRows(a.v.data, a.v.Slice(b, n2), 0, d.s2, w.v);
        std::fill(w.dk, w.dk + d.s2 * d.d, 0.0f);
        std::fill(w.dv, w.dv + d.s2 * d.dv, 0.0f);
        for (int64_t n = n2 * d.g; n < (n2 + 1) * d.g; ++n) {
          for (int64_t i0 = 0; i0 < d.s1; i0 += a.tiling.tile_q) {
            ATTN_RETURN_IF_ERROR(cancel.Check());
            const int64_t rows = std::min(a.tiling.tile_q, d.s1 - i0);
            BackwardTile(a, mask, w, b, n, i0, rows, st);
          }
        }
        StoreRows(w.dk, a.dk.Slice(b, n2), 0, d.s2, a.dk.mutable_data);
        StoreRows(w.dv, a.dv.Slice(b, n2), 0, d.s2, a.dv.mutable_data);
        return absl::OkStatus();
      });
  for (const RunStats& s : stats_of) {
    stats->tiles_computed += s.tiles_computed;
    stats->tiles_skipped += s.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
