#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/nsa_attention.h"
#include "kernels/nsa_selection.h"
#include "runtime/gemm.h"
#include "runtime/scratch.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread state of the forward kernel.
struct NsaForwardSlot {
  NsaKvCache kv;
  float* q = nullptr;  // [G, D] query rows of the group.
  float* s = nullptr;  // [G, slots] scores, then probabilities.
  float* o = nullptr;  // [G, Dv] output rows.
  RunStats stats;
};

void Carve(const NsaDims& d, Scratch& arena, NsaForwardSlot* w) {
  const int64_t slots = d.block_count * d.block_size;
  float* k = arena.Take(d.max_skv * d.d);
  float* v = arena.Take(d.max_skv * d.dv);
  w->kv.Init(d, k, v);
  w->q = arena.Take(d.g * d.d);
  w->s = arena.Take(d.g * slots);
  w->o = arena.Take(d.g * d.dv);
}

void WriteStats(const NsaKernelArgs& a, int64_t t, int64_t n, float max,
                float sum) {
  const int64_t idx = (t * a.dims.n1 + n) * 8;
  std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
  std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
}

// The G query heads of kv head n2 for token t (batch b). Returns false when
// the token attends nothing (the invalid-line result is written).
bool ForwardToken(const NsaKernelArgs& a, NsaForwardSlot& w, int64_t t,
                  int64_t b, int64_t n2) {
  const NsaDims& d = a.dims;
  const int64_t n0 = n2 * d.g;
  const HeadSlice out_rows = TndGroup(d.dtype, d.n1, t, n0, d.dv);
  const NsaSelection sel = SelectBlocks(a, t, b, n2);
  if (sel.slots == 0) {  // The causal rule drops every selected key.
    std::fill(w.o, w.o + d.g * d.dv, 0.0f);
    StoreRows(w.o, out_rows, 0, d.g, a.out);
    for (int64_t g = 0; g < d.g; ++g) {
      WriteStats(a, t, n0 + g, -FLT_MAX, FLT_MAX);
    }
    return false;
  }
  w.kv.Load(a, b, n2, sel);
  LoadRows(a.query, TndGroup(d.dtype, d.n1, t, n0, d.d), 0, d.g, w.q);
  const int64_t n = sel.slots;

  // S = scale Q Kselᵀ, one product per run of selected keys.
  int64_t col = 0;
  for (int c = 0; c < sel.count; col += sel.rows[c++]) {
    GemmNT(d.g, sel.rows[c], d.d, a.scale, w.q, d.d,
           w.kv.k_row(sel.first[c], d.d), d.d, 0.0f, w.s + col, n);
  }
  float inv_sum[kNsaMaxGroup];
  for (int64_t g = 0; g < d.g; ++g) {
    float* row = w.s + g * n;
    const float max = Max(row, n);
    const float sum = ExpShiftSum(row, n, max);
    inv_sum[g] = 1.0f / sum;
    WriteStats(a, t, n0 + g, max, sum);
  }
  // O = P Vsel / l.
  col = 0;
  for (int c = 0; c < sel.count; col += sel.rows[c++]) {
    GemmNN(d.g, d.dv, sel.rows[c], 1.0f, w.s + col, n,
           w.kv.v_row(sel.first[c], d.dv), d.dv, c == 0 ? 0.0f : 1.0f, w.o,
           d.dv);
  }
  for (int64_t g = 0; g < d.g; ++g) Scale(w.o + g * d.dv, d.dv, inv_sum[g]);
  StoreRows(w.o, out_rows, 0, d.g, a.out);
  return true;
}

}  // namespace

// Work items are (kv head, tile of query tokens), kv head major, so that a
// worker's consecutive items mostly share the (batch, kv head) its cache
// holds.
absl::Status NsaForward(const NsaKernelArgs& a, float* scratch,
                        size_t scratch_floats, ComputePool& pool,
                        const CancelToken& cancel, RunStats* stats) {
  const NsaDims& d = a.dims;
  const int workers = a.threads;
  const size_t per_worker =
      scratch_floats / static_cast<size_t>(workers) / 16 * 16;
  std::vector<NsaForwardSlot> slot_state(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    Scratch arena(scratch + per_worker * static_cast<size_t>(i), per_worker);
    Carve(d, arena, &slot_state[static_cast<size_t>(i)]);
  }
  const int64_t tiles = (d.t1 + a.token_tile - 1) / a.token_tile;
  const absl::Status status =
      pool.ParallelFor(tiles * d.n2, workers, [&](int64_t item, int slot) {
        ATTN_RETURN_IF_ERROR(cancel.Check());
        NsaForwardSlot& w = slot_state[static_cast<size_t>(slot)];
        const int64_t n2 = item / tiles;
        const int64_t t0 = (item % tiles) * a.token_tile;
        const int64_t t1 = std::min(d.t1, t0 + a.token_tile);
        int64_t b = NsaBatchOf(a, t0);
        for (int64_t t = t0; t < t1; ++t) {
          while (t >= a.q_start[static_cast<size_t>(b) + 1]) ++b;
          if (ForwardToken(a, w, t, b, n2)) {
            ++w.stats.tiles_computed;
          } else {
            ++w.stats.tiles_skipped;
          }
        }
        return absl::OkStatus();
      });
  for (const NsaForwardSlot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
