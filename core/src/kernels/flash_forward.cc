#include <algorithm>
#include <cfloat>
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

// Per-thread scratch of the forward kernel.
struct ForwardScratch {
  float* k;       // [S2, D]
  float* v;       // [S2, Dv]
  float* q;       // [tile_q, D]
  float* s;       // [tile_q, tile_kv] scores, then probabilities.
  float* o;       // [tile_q, Dv] unnormalized output.
  float* m;       // [tile_q] running max.
  float* l;       // [tile_q] running sum.
  float* row;     // [tile_kv] a pse row.
  uint8_t* keep;  // [tile_q * tile_kv] dropout keep bits.
};

ForwardScratch Carve(const AttentionGeometry& g, Scratch& arena) {
  const AttentionDims& d = g.dims;
  const int64_t tq = g.tiling.tile_q, tk = g.tiling.tile_kv;
  ForwardScratch s;
  s.k = arena.Take(d.s2 * d.d);
  s.v = arena.Take(d.s2 * d.dv);
  s.q = arena.Take(tq * d.d);
  s.s = arena.Take(tq * tk);
  s.o = arena.Take(tq * d.dv);
  s.m = arena.Take(tq);
  s.l = arena.Take(tq);
  s.row = arena.Take(tk);
  s.keep = reinterpret_cast<uint8_t*>(arena.Take((tq * tk + 3) / 4));
  return s;
}

// A batch with keys but no queries contributes nothing; one with queries but
// no keys gives out = 0, max = 0, sum = 0 (SEMANTICS.md §1).
void EmptyKeysTile(const FlashForwardArgs& a, const ForwardScratch& w,
                   int64_t b, int64_t n, int64_t i0, int64_t rows) {
  const AttentionGeometry& g = a.geo;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  std::fill(w.o, w.o + rows * g.dims.dv, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx = g.SoftmaxIndex(b, n, i0 + r);
    std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, 0.0f);
    std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, 0.0f);
  }
  StoreRows(w.o, a.out.Slice(b, n, span.q_start), i0, rows, a.out.mutable_data);
}

// One Sq tile of one query head: online softmax over the Skv tiles.
void ForwardTile(const FlashForwardArgs& a, const ScoreModifiers& mods,
                 const ForwardScratch& w, int64_t b, int64_t n, int64_t i0,
                 int64_t rows, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  if (span.s2 == 0) {
    EmptyKeysTile(a, w, b, n, i0, rows);
    return;
  }
  LoadRows(a.q.data, a.q.Slice(b, n, span.q_start), i0, rows, w.q);
  std::fill(w.m, w.m + rows, -INFINITY);
  std::fill(w.l, w.l + rows, 0.0f);
  std::fill(w.o, w.o + rows * d.dv, 0.0f);

  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (ScoreTile(g, mods, b, n, i0, rows, j0, cols, w.q, w.k, w.s, w.row,
                  stats) == TileCoverage::kEmpty) {
      continue;
    }
    if (mods.dropout.active()) {
      mods.dropout.Fill(b, n, span, i0, rows, j0, cols, w.keep);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* row = w.s + r * cols;
      const float m_new = std::max(w.m[r], Max(row, cols));
      if (m_new == -INFINITY) {  // Nothing kept in this row so far.
        std::fill(row, row + cols, 0.0f);
        continue;
      }
      const float correction = std::exp(w.m[r] - m_new);  // 0 when m = -inf.
      const float sum = ExpShiftSum(row, cols, m_new);
      w.l[r] = w.l[r] * correction + sum;
      w.m[r] = m_new;
      if (correction != 1.0f) Scale(w.o + r * d.dv, d.dv, correction);
      if (mods.dropout.active()) {
        TileDropout::Apply(row, w.keep + r * cols, cols,
                           mods.dropout.inv_keep_prob());
      }
    }
    GemmNN(rows, d.dv, cols, 1.0f, w.s, cols, w.v + j0 * d.dv, d.dv, 1.0f, w.o,
           d.dv);
  }

  for (int64_t r = 0; r < rows; ++r) {
    float* o = w.o + r * d.dv;
    float max = w.m[r], sum = w.l[r];
    if (max == -INFINITY) {  // Fully masked row: the "invalid line" result.
      std::fill(o, o + d.dv, 0.0f);
      max = -FLT_MAX;
      sum = FLT_MAX;
    } else {
      Scale(o, d.dv, 1.0f / sum);
    }
    const int64_t idx = g.SoftmaxIndex(b, n, i0 + r);
    std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
    std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
  }
  StoreRows(w.o, a.out.Slice(b, n, span.q_start), i0, rows, a.out.mutable_data);
}

}  // namespace

// Work items are (b, n1, Sq tile) in order, so a worker's consecutive items
// mostly share a kv head and it reloads K/V only when the head changes.
absl::Status FlashForward(const FlashForwardArgs& a, float* scratch,
                          size_t scratch_floats, ComputePool& pool,
                          const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const int slots = g.tiling.threads;
  const size_t per_slot = scratch_floats / static_cast<size_t>(slots);
  struct Slot {
    ForwardScratch w;
    HeldKvHead held;  // In w.k / w.v.
    RunStats stats;
  };
  std::vector<Slot> slot_state(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    Scratch arena(scratch + per_slot * static_cast<size_t>(i), per_slot);
    slot_state[static_cast<size_t>(i)].w = Carve(g, arena);
  }
  const ScoreModifiers mods(g);
  const QueryTileItems items(g.batches, d.n1, g.tiling.tile_q);
  const absl::Status status =
      pool.ParallelFor(items.size(), slots, [&](int64_t item, int slot) {
        ATTN_RETURN_IF_ERROR(cancel.Check());
        Slot& s = slot_state[static_cast<size_t>(slot)];
        const QueryTileItems::Item it = items.at(item);
        const BatchSpan& span = g.batches[static_cast<size_t>(it.b)];
        s.held.Hold(a.k, a.v, it.b, it.n / d.g, span, s.w.k, s.w.v);
        const int64_t rows = std::min(g.tiling.tile_q, span.s1 - it.i0);
        ForwardTile(a, mods, s.w, it.b, it.n, it.i0, rows, &s.stats);
        return absl::OkStatus();
      });
  for (const Slot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
