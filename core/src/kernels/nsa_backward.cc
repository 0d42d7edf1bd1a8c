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

// Per-thread state of the backward kernel. R = token_tile x G rows.
struct NsaBackwardSlot {
  NsaKvCache kv;
  NsaTile tile;
  float* q = nullptr;    // [R, D] query rows of the tile, token-major.
  float* dy = nullptr;   // [R, Dv]
  float* dq = nullptr;   // [R, D]
  float* qg = nullptr;   // [R, D] query rows of one block's tokens.
  float* dyg = nullptr;  // [R, Dv] their dY rows.
  float* pg = nullptr;   // [R, bs] their probabilities for the block.
  float* dsg = nullptr;  // [R, bs] their dP, then dS.
  float* og = nullptr;   // [R, max(D, Dv)] their dQ share; attention_out.
  RunStats stats;
};

void Carve(const NsaDims& d, int64_t tile_tokens, Scratch& arena,
           NsaBackwardSlot* w) {
  const int64_t rows = tile_tokens * d.g;
  float* k = arena.Take(d.max_skv * d.d);
  float* v = arena.Take(d.max_skv * d.dv);
  w->kv.Init(d, k, v);
  w->tile.Reserve();
  w->q = arena.Take(rows * d.d);
  w->dy = arena.Take(rows * d.dv);
  w->dq = arena.Take(rows * d.d);
  w->qg = arena.Take(rows * d.d);
  w->dyg = arena.Take(rows * d.dv);
  w->pg = arena.Take(rows * d.block_size);
  w->dsg = arena.Take(rows * d.block_size);
  w->og = arena.Take(rows * std::max(d.d, d.dv));
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

// Tokens [t0, t1) of batch b through kv head n2: writes dQ of their G query
// heads and adds dK/dV of the selected key rows into `dk_acc` / `dv_acc`
// (batch-local rows). With the forward's statistics every block is
// independent, so the work runs block by block (increasing block order),
// each block's products taking every token of the tile that selects it.
void BackwardTile(const NsaKernelArgs& a, NsaBackwardSlot& w, int64_t b,
                  int64_t n2, int64_t t0, int64_t t1, float* dk_acc,
                  float* dv_acc) {
  const NsaDims& d = a.dims;
  const int64_t g = d.g, bs = d.block_size, n0 = n2 * g;
  NsaTile& tile = w.tile;
  tile.Build(a, b, n2, t0, t1);
  w.kv.Load(a, b, n2, tile);
  float row_d[kNsaMaxTileRows];  // D = rowsum(dY * attention_out).
  float row_max[kNsaMaxTileRows];
  float row_inv_sum[kNsaMaxTileRows];
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    const int64_t t = t0 + ti;
    LoadRows(a.query, TndGroup(d.dtype, d.n1, t, n0, d.d), 0, g,
             w.q + ti * g * d.d);
    LoadRows(a.dy, TndGroup(d.dtype, d.n1, t, n0, d.dv), 0, g,
             w.dy + ti * g * d.dv);
    LoadRows(a.out_in, TndGroup(d.dtype, d.n1, t, n0, d.dv), 0, g, w.og);
    for (int64_t h = 0; h < g; ++h) {
      const int64_t row = ti * g + h;
      const int64_t stat = (t * d.n1 + n0 + h) * 8;
      row_d[row] = Dot(w.dy + row * d.dv, w.og + h * d.dv, d.dv);
      row_max[row] = a.max_in[stat];
      row_inv_sum[row] = 1.0f / a.sum_in[stat];
    }
  }
  std::fill(w.dq, w.dq + tile.tokens() * g * d.d, 0.0f);
  tile.ForEachBlock([&](int64_t block, const NsaMember* members, int count) {
    const int64_t rows = count * g;
    const float* k = w.kv.k_block(block, d);
    const float* v = w.kv.v_block(block, d);
    GatherTokenRows(w.q, g, d.d, members, count, w.qg);
    GatherTokenRows(w.dy, g, d.dv, members, count, w.dyg);
    // P = exp(scale Q Kᵀ - M) / L, times the times the token selects the
    // block, 0 where the causal rule drops the key; dS = P (dY Vᵀ - D).
    GemmNT(rows, bs, d.d, a.scale, w.qg, d.d, k, d.d, 0.0f, w.pg, bs);
    GemmNT(rows, bs, d.dv, 1.0f, w.dyg, d.dv, v, d.dv, 0.0f, w.dsg, bs);
    for (int m = 0; m < count; ++m) {
      const NsaMember& mem = members[m];
      for (int64_t h = 0; h < g; ++h) {
        const int64_t row = mem.token * g + h;
        float* p = w.pg + (m * g + h) * bs;
        float* ds = w.dsg + (m * g + h) * bs;
        ExpShiftSum(p, mem.rows, row_max[row]);
        std::fill(p + mem.rows, p + bs, 0.0f);
        Scale(p, mem.rows, row_inv_sum[row] * static_cast<float>(mem.count));
        const float rd = row_d[row];
        for (int64_t j = 0; j < bs; ++j) ds[j] = p[j] * (ds[j] - rd);
      }
    }
    // dQ += scale dS K;  dK[block] += scale dSᵀ Q;  dV[block] += Pᵀ dY.
    GemmNN(rows, d.d, bs, a.scale, w.dsg, bs, k, d.d, 0.0f, w.og, d.d);
    AddTokenRows(w.og, g, d.d, members, count, w.dq);
    GemmTN(bs, d.d, rows, a.scale, w.dsg, bs, w.qg, d.d, 1.0f,
           dk_acc + block * bs * d.d, d.d);
    GemmTN(bs, d.dv, rows, 1.0f, w.pg, bs, w.dyg, d.dv, 1.0f,
           dv_acc + block * bs * d.dv, d.dv);
  });
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    StoreRows(w.dq + ti * g * d.d, TndGroup(d.dtype, d.n1, t0 + ti, n0, d.d), 0,
              g, a.dq);
    if (tile.slots(ti) > 0) {
      ++w.stats.tiles_computed;
    } else {
      ++w.stats.tiles_skipped;
    }
  }
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
    Carve(d, a.token_tile, arena, &slot_state[static_cast<size_t>(i)]);
  }

  // Pass 1: dQ per tile; dK/dV into the chunk's partial sums. Items are
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
        for (int64_t t = c.t_begin; t < c.t_end; t += a.token_tile) {
          ATTN_RETURN_IF_ERROR(cancel.Check());
          BackwardTile(a, w, c.b, n2, t, std::min(c.t_end, t + a.token_tile),
                       dk_acc, dv_acc);
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
