#include <algorithm>
#include <cstring>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/nsa_attention.h"
#include "kernels/nsa_selection.h"
#include "runtime/gemm.h"
#include "runtime/scratch.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread state of the backward kernel.
struct NsaBackwardSlot {
  NsaKvCache kv;
  float* q = nullptr;   // [G, D]
  float* dq = nullptr;  // [G, D]
  float* dy = nullptr;  // [G, Dv]
  float* o = nullptr;   // [G, Dv] the forward's attention_out.
  float* p = nullptr;   // [G, slots] probabilities.
  float* ds = nullptr;  // [G, slots] dP, then dS.
  RunStats stats;
};

void Carve(const NsaDims& d, Scratch& arena, NsaBackwardSlot* w) {
  const int64_t slots = d.block_count * d.block_size;
  float* k = arena.Take(d.max_skv * d.d);
  float* v = arena.Take(d.max_skv * d.dv);
  w->kv.Init(d, k, v);
  w->q = arena.Take(d.g * d.d);
  w->dq = arena.Take(d.g * d.d);
  w->dy = arena.Take(d.g * d.dv);
  w->o = arena.Take(d.g * d.dv);
  w->p = arena.Take(d.g * slots);
  w->ds = arena.Take(d.g * slots);
}

// dst[i] += src[i].
void AddTo(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// One chunk of query tokens of batch b for kv head n2, and where its dK/dV
// partial sums live: dk [Skv_b, D] then dv [Skv_b, Dv].
struct Chunk {
  int64_t b = 0;
  int64_t t_begin = 0, t_end = 0;
  float* partial = nullptr;  // For kv head 0; head n2 at + n2 * stride.
  int64_t stride = 0;        // Floats per kv head: Skv_b * (D + Dv).
};

// Token t (batch b), kv head n2: writes dQ of the G heads and adds dK/dV of
// the selected rows into `dk_acc` / `dv_acc` (batch-local rows). Returns
// false when the token attends nothing (dQ stays zero).
bool BackwardToken(const NsaKernelArgs& a, NsaBackwardSlot& w, int64_t t,
                   int64_t b, int64_t n2, float* dk_acc, float* dv_acc) {
  const NsaDims& d = a.dims;
  const NsaSelection sel = SelectBlocks(a, t, b, n2);
  if (sel.slots == 0) return false;
  w.kv.Load(a, b, n2, sel);
  const int64_t n0 = n2 * d.g;
  const int64_t n = sel.slots;
  LoadRows(a.query, TndGroup(d.dtype, d.n1, t, n0, d.d), 0, d.g, w.q);
  LoadRows(a.dy, TndGroup(d.dtype, d.n1, t, n0, d.dv), 0, d.g, w.dy);
  LoadRows(a.out_in, TndGroup(d.dtype, d.n1, t, n0, d.dv), 0, d.g, w.o);

  // P = exp(scale Q Kᵀ - M) / L with the forward's statistics; dP = dY Vᵀ.
  int64_t col = 0;
  for (int c = 0; c < sel.count; col += sel.rows[c++]) {
    GemmNT(d.g, sel.rows[c], d.d, a.scale, w.q, d.d,
           w.kv.k_row(sel.first[c], d.d), d.d, 0.0f, w.p + col, n);
    GemmNT(d.g, sel.rows[c], d.dv, 1.0f, w.dy, d.dv,
           w.kv.v_row(sel.first[c], d.dv), d.dv, 0.0f, w.ds + col, n);
  }
  for (int64_t g = 0; g < d.g; ++g) {
    const int64_t stat = (t * d.n1 + n0 + g) * 8;
    float* p = w.p + g * n;
    ExpShiftSum(p, n, a.max_in[stat]);
    Scale(p, n, 1.0f / a.sum_in[stat]);
    // dS = P (dP - D), D = rowsum(dY * O).
    const float rd = Dot(w.dy + g * d.dv, w.o + g * d.dv, d.dv);
    float* ds = w.ds + g * n;
    for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - rd);
  }
  // dQ = scale dS Ksel; dK[rows] += scale dSᵀ Q; dV[rows] += Pᵀ dY, run by
  // run in topk order: a block selected twice adds twice.
  col = 0;
  for (int c = 0; c < sel.count; col += sel.rows[c++]) {
    const int64_t rows = sel.rows[c], first = sel.first[c];
    GemmNN(d.g, d.d, rows, a.scale, w.ds + col, n, w.kv.k_row(first, d.d), d.d,
           c == 0 ? 0.0f : 1.0f, w.dq, d.d);
    GemmTN(rows, d.d, d.g, a.scale, w.ds + col, n, w.q, d.d, 1.0f,
           dk_acc + first * d.d, d.d);
    GemmTN(rows, d.dv, d.g, 1.0f, w.p + col, n, w.dy, d.dv, 1.0f,
           dv_acc + first * d.dv, d.dv);
  }
  StoreRows(w.dq, TndGroup(d.dtype, d.n1, t, n0, d.d), 0, d.g, a.dq);
  return true;
}

// The chunks of every batch, in batch and token order, with their partial
// sums laid out one after another in `partials`.
std::vector<Chunk> MakeChunks(const NsaKernelArgs& a, float* partials) {
  const NsaDims& d = a.dims;
  std::vector<Chunk> chunks;
  for (int64_t b = 0; b < d.b; ++b) {
    const size_t bi = static_cast<size_t>(b);
    const int64_t skv = a.kv_start[bi + 1] - a.kv_start[bi];
    const int64_t stride = skv * (d.d + d.dv);
    for (int64_t t = a.q_start[bi]; t < a.q_start[bi + 1];
         t += a.chunk_tokens) {
      Chunk c;
      c.b = b;
      c.t_begin = t;
      c.t_end = std::min(a.q_start[bi + 1], t + a.chunk_tokens);
      c.partial = partials;
      c.stride = stride;
      partials += stride * d.n2;
      chunks.push_back(c);
    }
  }
  return chunks;
}

}  // namespace

// Why chunks: dK/dV rows receive contributions from any token of their
// batch, so some fixed order of additions is needed for deterministic bits.
// Owning a whole (batch, kv head) by one worker would leave a single-batch
// MQA request with one work item; per-thread partial sums would depend on
// which thread ran what. Chunks of tokens fixed by the plan give parallel
// work whose sums are grouped the same way whatever the thread count.
absl::Status NsaBackward(const NsaKernelArgs& a, float* scratch,
                         size_t scratch_floats, ComputePool& pool,
                         const CancelToken& cancel, RunStats* stats) {
  const NsaDims& d = a.dims;
  const int slots = a.threads;
  // Layout: the partial sums first, then one scratch region per thread.
  float* partials = scratch;
  const std::vector<Chunk> chunks = MakeChunks(a, partials);
  size_t partial_floats = 0;
  for (const Chunk& c : chunks) {
    partial_floats += static_cast<size_t>(c.stride * d.n2);
  }
  partial_floats = (partial_floats + 15) / 16 * 16;
  const size_t per_slot =
      (scratch_floats - partial_floats) / static_cast<size_t>(slots) / 16 * 16;
  std::vector<NsaBackwardSlot> slot_state(static_cast<size_t>(slots));
  for (int i = 0; i < slots; ++i) {
    Scratch arena(scratch + partial_floats + per_slot * static_cast<size_t>(i),
                  per_slot);
    Carve(d, arena, &slot_state[static_cast<size_t>(i)]);
  }

  // Pass 1: dQ per token; dK/dV into the chunk's partial sums. Items are
  // kv head major so that a worker's consecutive items mostly share the
  // (batch, kv head) its cache holds.
  const int64_t chunk_count_all = static_cast<int64_t>(chunks.size());
  ATTN_RETURN_IF_ERROR(pool.ParallelFor(
      chunk_count_all * d.n2, slots,
      [&](int64_t item, int slot) -> absl::Status {
        const Chunk& c = chunks[static_cast<size_t>(item % chunk_count_all)];
        const int64_t n2 = item / chunk_count_all;
        const int64_t skv = c.stride / (d.d + d.dv);
        float* dk_acc = c.partial + n2 * c.stride;
        float* dv_acc = dk_acc + skv * d.d;
        std::fill(dk_acc, dk_acc + c.stride, 0.0f);
        NsaBackwardSlot& w = slot_state[static_cast<size_t>(slot)];
        RunStats& st = w.stats;
        for (int64_t t = c.t_begin; t < c.t_end; ++t) {
          ATTN_RETURN_IF_ERROR(cancel.Check());
          if (BackwardToken(a, w, t, c.b, n2, dk_acc, dv_acc)) {
            ++st.tiles_computed;
          } else {
            ++st.tiles_skipped;
          }
        }
        return absl::OkStatus();
      }));
  for (const NsaBackwardSlot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }

  // Pass 2: per (batch, kv head, key block), add the batch's chunks in chunk
  // order into the first chunk's rows and store them as dk/dv.
  std::vector<size_t> first_chunk(static_cast<size_t>(d.b), chunks.size());
  std::vector<int64_t> chunk_count(static_cast<size_t>(d.b), 0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const size_t b = static_cast<size_t>(chunks[i].b);
    first_chunk[b] = std::min(first_chunk[b], i);
    ++chunk_count[b];
  }
  // item_end[b]: reduction items of batches 0..b (batches without query
  // tokens have none: their dk/dv stay zero).
  std::vector<int64_t> item_end(static_cast<size_t>(d.b));
  int64_t items = 0;
  for (int64_t b = 0; b < d.b; ++b) {
    const size_t bi = static_cast<size_t>(b);
    if (chunk_count[bi] > 0) {
      items += d.n2 * (a.kv_start[bi + 1] - a.kv_start[bi]) / d.block_size;
    }
    item_end[bi] = items;
  }
  return pool.ParallelFor(items, slots, [&](int64_t item, int) {
    ATTN_RETURN_IF_ERROR(cancel.Check());
    const size_t b = static_cast<size_t>(
        std::upper_bound(item_end.begin(), item_end.end(), item) -
        item_end.begin());
    const int64_t local = item - (b == 0 ? 0 : item_end[b - 1]);
    const int64_t blocks = (a.kv_start[b + 1] - a.kv_start[b]) / d.block_size;
    const int64_t n2 = local / blocks;
    const int64_t row0 = (local % blocks) * d.block_size;
    const Chunk& c0 = chunks[first_chunk[b]];
    const int64_t skv = c0.stride / (d.d + d.dv);
    float* dk0 = c0.partial + n2 * c0.stride + row0 * d.d;
    float* dv0 = c0.partial + n2 * c0.stride + skv * d.d + row0 * d.dv;
    for (int64_t k = 1; k < chunk_count[b]; ++k) {
      const Chunk& c = chunks[first_chunk[b] + static_cast<size_t>(k)];
      const float* dk = c.partial + n2 * c.stride + row0 * d.d;
      const float* dv = c.partial + n2 * c.stride + skv * d.d + row0 * d.dv;
      AddTo(dk0, dk, d.block_size * d.d);
      AddTo(dv0, dv, d.block_size * d.dv);
    }
    const int64_t kv_row = a.kv_start[b] + row0;
    StoreRows(dk0, TndHead(d.dtype, d.n2, n2, d.d), kv_row, d.block_size, a.dk);
    StoreRows(dv0, TndHead(d.dtype, d.n2, n2, d.dv), kv_row, d.block_size,
              a.dv);
    return absl::OkStatus();
  });
}

}  // namespace attnserve::core
