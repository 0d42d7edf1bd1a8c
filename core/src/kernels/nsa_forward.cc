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

// Per-thread scratch of the forward kernel.
struct NsaForwardScratch {
  float* k;  // [slots, D] selected keys.
  float* v;  // [slots, Dv] selected values.
  float* q;  // [G, D] query rows of the group.
  float* s;  // [G, slots] scores, then probabilities.
  float* o;  // [G, Dv] output rows.
};

NsaForwardScratch Carve(const NsaDims& d, Scratch& arena) {
  const int64_t slots = d.block_count * d.block_size;
  NsaForwardScratch w;
  w.k = arena.Take(slots * d.d);
  w.v = arena.Take(slots * d.dv);
  w.q = arena.Take(d.g * d.d);
  w.s = arena.Take(d.g * slots);
  w.o = arena.Take(d.g * d.dv);
  return w;
}

void WriteStats(const NsaKernelArgs& a, int64_t t, int64_t n, float max,
                float sum) {
  const int64_t idx = (t * a.dims.n1 + n) * 8;
  std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
  std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
}

// The G query heads of kv head n2 for token t (batch b). Returns false when
// the token attends nothing (the invalid-line result is written).
bool ForwardToken(const NsaKernelArgs& a, const NsaForwardScratch& w, int64_t t,
                  int64_t b, int64_t n2) {
  const NsaDims& d = a.dims;
  const int64_t n0 = n2 * d.g;
  const HeadSlice out_rows = TndGroup(d.dtype, d.n1, t, n0, d.dv);
  const NsaSelection sel = SelectBlocks(a, t, b, n2);
  if (sel.slots == 0) {  // Causal rule drops every selected key.
    std::fill(w.o, w.o + d.g * d.dv, 0.0f);
    StoreRows(w.o, out_rows, 0, d.g, a.out);
    for (int64_t g = 0; g < d.g; ++g)
      WriteStats(a, t, n0 + g, -FLT_MAX, FLT_MAX);
    return false;
  }
  const int64_t kv0 = a.kv_start[static_cast<size_t>(b)];
  const int64_t n = sel.slots;
  GatherSelected(sel, a.key, d.dtype, d.n2, n2, d.d, kv0, w.k);
  GatherSelected(sel, a.value, d.dtype, d.n2, n2, d.dv, kv0, w.v);
  LoadRows(a.query, TndGroup(d.dtype, d.n1, t, n0, d.d), 0, d.g, w.q);

  GemmNT(d.g, n, d.d, a.scale, w.q, d.d, w.k, d.d, 0.0f, w.s, n);
  float inv_sum[kNsaMaxGroup];
  for (int64_t g = 0; g < d.g; ++g) {
    float* row = w.s + g * n;
    const float max = Max(row, n);
    const float sum = ExpShiftSum(row, n, max);
    inv_sum[g] = 1.0f / sum;
    WriteStats(a, t, n0 + g, max, sum);
  }
  GemmNN(d.g, d.dv, n, 1.0f, w.s, n, w.v, d.dv, 0.0f, w.o, d.dv);
  for (int64_t g = 0; g < d.g; ++g) Scale(w.o + g * d.dv, d.dv, inv_sum[g]);
  StoreRows(w.o, out_rows, 0, d.g, a.out);
  return true;
}

}  // namespace

absl::Status NsaForward(const NsaKernelArgs& a, float* scratch,
                        size_t scratch_floats, ComputePool& pool,
                        const CancelToken& cancel, RunStats* stats) {
  const NsaDims& d = a.dims;
  const int slots = a.threads;
  const size_t per_slot = scratch_floats / static_cast<size_t>(slots) / 16 * 16;
  std::vector<NsaForwardScratch> scratch_of(static_cast<size_t>(slots));
  std::vector<RunStats> stats_of(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    Scratch arena(scratch + per_slot * static_cast<size_t>(i), per_slot);
    scratch_of[static_cast<size_t>(i)] = Carve(d, arena);
  }
  const int64_t tiles = (d.t1 + a.token_tile - 1) / a.token_tile;
  const absl::Status status =
      pool.ParallelFor(tiles * d.n2, slots, [&](int64_t item, int slot) {
        ATTN_RETURN_IF_ERROR(cancel.Check());
        const NsaForwardScratch& w = scratch_of[static_cast<size_t>(slot)];
        RunStats& st = stats_of[static_cast<size_t>(slot)];
        const int64_t n2 = item % d.n2;
        const int64_t t0 = (item / d.n2) * a.token_tile;
        const int64_t t1 = std::min(d.t1, t0 + a.token_tile);
        int64_t b = NsaBatchOf(a, t0);
        for (int64_t t = t0; t < t1; ++t) {
          while (t >= a.q_start[static_cast<size_t>(b) + 1]) ++b;
          if (ForwardToken(a, w, t, b, n2)) {
            ++st.tiles_computed;
          } else {
            ++st.tiles_skipped;
          }
        }
        return absl::OkStatus();
      });
  for (const RunStats& s : stats_of) {
    stats->tiles_computed += s.tiles_computed;
    stats->tiles_skipped += s.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
