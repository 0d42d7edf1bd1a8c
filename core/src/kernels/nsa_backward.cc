#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/nsa_attention.h"
#include "kernels/nsa_selection.h"
#include "runtime/bf16_gemm.h"
#include "runtime/bf16_tiles.h"
#include "runtime/gemm.h"
#include "runtime/scratch.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread state of the backward kernel. R = token_tile x G rows, Rp = R
// rounded up to the bf16 granule. fp32 products read q / dy / qg / dyg,
// bf16 products their bf16 counterparts (gathered rows zero-padded).
struct NsaBackwardSlot {
  NsaKvCache kv;
  NsaTile tile;
  float* q = nullptr;        // fp32: [R, D] query rows of the tile.
  uint16_t* qb = nullptr;    // bf16: the same rows.
  float* dy = nullptr;       // [R, Dv] (both: D = rowsum(dY * O) reads it).
  uint16_t* dyb = nullptr;   // bf16: the same rows.
  float* dq = nullptr;       // [R, D]
  float* qg = nullptr;       // fp32: [R, D] query rows of one block's tokens.
  uint16_t* qgb = nullptr;   // bf16: [Rp, D]
  float* dyg = nullptr;      // fp32: [R, Dv] their dY rows.
  uint16_t* dygb = nullptr;  // bf16: [Rp, Dv]
  float* pg = nullptr;       // [Rp, bs] their probabilities for the block.
  float* dsg = nullptr;      // [Rp, bs] their dP, then dS.
  uint16_t* pgb = nullptr;   // bf16: [Rp, bs] P rounded.
  uint16_t* dsgb = nullptr;  // bf16: [Rp, bs] dS rounded.
  float* og = nullptr;       // [Rp, max(D, Dv)] their dQ share; attention_out.
  RunStats stats;
};

// The one layout of a worker's region (sizes it when counting).
void Carve(const NsaDims& d, int64_t tile_tokens, TileProducts products,
           Scratch& arena, NsaBackwardSlot* w) {
  const int64_t rows = tile_tokens * d.g;
  const int64_t rows_p = RoundUpToGranule(rows);
  const int64_t bs = d.block_size;
  if (products == TileProducts::kBFloat16) {
    uint16_t* kb = arena.Take<uint16_t>(d.max_skv * d.d);
    uint16_t* vb = arena.Take<uint16_t>(d.max_skv * d.dv);
    w->kv.Init(d, nullptr, nullptr, kb, vb);
    w->qb = arena.Take<uint16_t>(rows * d.d);
    w->dyb = arena.Take<uint16_t>(rows * d.dv);
    w->qgb = arena.Take<uint16_t>(rows_p * d.d);
    w->dygb = arena.Take<uint16_t>(rows_p * d.dv);
    w->pgb = arena.Take<uint16_t>(rows_p * bs);
    w->dsgb = arena.Take<uint16_t>(rows_p * bs);
  } else {
    float* k = arena.Take<float>(d.max_skv * d.d);
    float* v = arena.Take<float>(d.max_skv * d.dv);
    w->kv.Init(d, k, v, nullptr, nullptr);
    w->q = arena.Take<float>(rows * d.d);
    w->qg = arena.Take<float>(rows * d.d);
    w->dyg = arena.Take<float>(rows * d.dv);
  }
  w->tile.Reserve();
  w->dy = arena.Take<float>(rows * d.dv);
  w->dq = arena.Take<float>(rows * d.d);
  w->pg = arena.Take<float>(rows_p * bs);
  w->dsg = arena.Take<float>(rows_p * bs);
  w->og = arena.Take<float>(rows_p * std::max(d.d, d.dv));
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
  const bool bf16 = a.products == TileProducts::kBFloat16;
  NsaTile& tile = w.tile;
  tile.Build(a, b, n2, t0, t1);
  w.kv.Load(a, b, n2, tile);
  float row_d[kNsaMaxTileRows];  // D = rowsum(dY * attention_out).
  float row_max[kNsaMaxTileRows];
  float row_inv_sum[kNsaMaxTileRows];
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    const int64_t t = t0 + ti;
    const HeadSlice q_rows = TndGroup(d.dtype, d.n1, t, n0, d.d);
    const HeadSlice dy_rows = TndGroup(d.dtype, d.n1, t, n0, d.dv);
    if (bf16) {
      CopyBf16Rows(a.query, q_rows, 0, g, w.qb + ti * g * d.d);
      CopyBf16Rows(a.dy, dy_rows, 0, g, w.dyb + ti * g * d.dv);
    } else {
      LoadRows(a.query, q_rows, 0, g, w.q + ti * g * d.d);
    }
    LoadRows(a.dy, dy_rows, 0, g, w.dy + ti * g * d.dv);
    LoadRows(a.out_in, dy_rows, 0, g, w.og);
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
    const int64_t rows_p = bf16 ? RoundUpToGranule(rows) : rows;
    // P = exp(scale Q Kᵀ - M) / L, times the times the token selects the
    // block, 0 where the causal rule drops the key; dS = P (dY Vᵀ - D).
    if (bf16) {
      GatherTokenRows(w.qb, g, d.d, members, count, w.qgb);
      ZeroBf16Rows(w.qgb, d.d, rows, rows_p, d.d);
      GatherTokenRows(w.dyb, g, d.dv, members, count, w.dygb);
      ZeroBf16Rows(w.dygb, d.dv, rows, rows_p, d.dv);
      Bf16Gemm({rows_p, bs, d.d, d.d, d.d, bs, false, true, false}, w.qgb,
               w.kv.kb_block(block, d), w.pg);
      Scale(w.pg, rows * bs, a.scale);
      Bf16Gemm({rows_p, bs, d.dv, d.dv, d.dv, bs, false, true, false}, w.dygb,
               w.kv.vb_block(block, d), w.dsg);
    } else {
      GatherTokenRows(w.q, g, d.d, members, count, w.qg);
      GatherTokenRows(w.dy, g, d.dv, members, count, w.dyg);
      GemmNT(rows, bs, d.d, a.scale, w.qg, d.d, w.kv.k_block(block, d), d.d,
             0.0f, w.pg, bs);
      GemmNT(rows, bs, d.dv, 1.0f, w.dyg, d.dv, w.kv.v_block(block, d), d.dv,
             0.0f, w.dsg, bs);
    }
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
    // dQ += scale dS K;  dK[block] += scale dSᵀ Q;  dV[block] += Pᵀ dY
    // (bf16: dS and P rounded to bf16; dQ and dK scaled when stored).
    if (bf16) {
      ToBf16Padded(w.dsg, bs, rows, bs, w.dsgb, bs, rows_p, bs);
      ToBf16Padded(w.pg, bs, rows, bs, w.pgb, bs, rows_p, bs);
      Bf16Gemm({rows_p, d.d, bs, bs, d.d, d.d, false, false, false}, w.dsgb,
               w.kv.kb_block(block, d), w.og);
      AddTokenRows(w.og, g, d.d, members, count, w.dq);
      Bf16Gemm({bs, d.d, rows_p, bs, d.d, d.d, true, false, true}, w.dsgb,
               w.qgb, dk_acc + block * bs * d.d);
      Bf16Gemm({bs, d.dv, rows_p, bs, d.dv, d.dv, true, false, true}, w.pgb,
               w.dygb, dv_acc + block * bs * d.dv);
      return;
    }
    GemmNN(rows, d.d, bs, a.scale, w.dsg, bs, w.kv.k_block(block, d), d.d, 0.0f,
           w.og, d.d);
    AddTokenRows(w.og, g, d.d, members, count, w.dq);
    GemmTN(bs, d.d, rows, a.scale, w.dsg, bs, w.qg, d.d, 1.0f,
           dk_acc + block * bs * d.d, d.d);
    GemmTN(bs, d.dv, rows, 1.0f, w.pg, bs, w.dyg, d.dv, 1.0f,
           dv_acc + block * bs * d.dv, d.dv);
  });
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    float* dq = w.dq + ti * g * d.d;
    if (bf16) Scale(dq, g * d.d, a.scale);
    StoreRows(dq, TndGroup(d.dtype, d.n1, t0 + ti, n0, d.d), 0, g, a.dq);
    if (tile.slots(ti) > 0) {
      ++w.stats.tiles_computed;
    } else {
      ++w.stats.tiles_skipped;
    }
  }
}

// The chunks of every batch, in batch and token order, with their partial
// sums laid out one after another from `partials` (null: only counted).
// Sets *floats to the partial sums' size, in whole cache lines.
std::vector<Chunk> MakeChunks(const NsaKernelArgs& a, float* partials,
                              size_t* floats) {
  const NsaDims& d = a.dims;
  std::vector<Chunk> chunks;
  size_t offset = 0;
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
      c.partial = partials + offset;
      c.stride = stride;
      offset += static_cast<size_t>(stride * d.n2);
      chunks.push_back(c);
    }
  }
  *floats = (offset + 15) / 16 * 16;
  return chunks;
}

// Pass 1: dQ per tile; dK/dV into the chunk's partial sums. Items are
// (chunk, kv head), kv head major, so that a worker's consecutive items
// mostly share the (batch, kv head) its cache holds.
absl::Status AccumulateChunks(const NsaKernelArgs& a,
                              const std::vector<Chunk>& chunks,
                              std::vector<NsaBackwardSlot>& slot_state,
                              ComputePool& pool, const CancelToken& cancel) {
  const NsaDims& d = a.dims;
  const int64_t count = static_cast<int64_t>(chunks.size());
  return pool.ParallelFor(
      count * d.n2, a.threads, [&](int64_t item, int slot) -> absl::Status {
        const Chunk& c = chunks[static_cast<size_t>(item % count)];
        const int64_t n2 = item / count;
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
      });
}

// Pass 2: per (batch, kv head, key block), adds the batch's chunks in chunk
// order into the first chunk's rows and stores them as dk/dv (bf16
// products: dK scaled here). Batches without query tokens have no items:
// their dk/dv stay zero.
absl::Status ReduceChunks(const NsaKernelArgs& a,
                          const std::vector<Chunk>& chunks, ComputePool& pool,
                          const CancelToken& cancel) {
  const NsaDims& d = a.dims;
  const float dk_scale = a.products == TileProducts::kBFloat16 ? a.scale : 1.0f;
  std::vector<size_t> first_chunk(static_cast<size_t>(d.b), chunks.size());
  std::vector<int64_t> chunk_count(static_cast<size_t>(d.b), 0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const size_t b = static_cast<size_t>(chunks[i].b);
    first_chunk[b] = std::min(first_chunk[b], i);
    ++chunk_count[b];
  }
  // item_end[b]: reduction items of batches 0..b.
  std::vector<int64_t> item_end(static_cast<size_t>(d.b));
  int64_t items = 0;
  for (int64_t b = 0; b < d.b; ++b) {
    const size_t bi = static_cast<size_t>(b);
    if (chunk_count[bi] > 0) {
      items += d.n2 * (a.kv_start[bi + 1] - a.kv_start[bi]) / d.block_size;
    }
    item_end[bi] = items;
  }
  return pool.ParallelFor(items, a.threads, [&](int64_t item, int) {
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
    if (dk_scale != 1.0f) Scale(dk0, d.block_size * d.d, dk_scale);
    const int64_t kv_row = a.kv_start[b] + row0;
    StoreRows(dk0, TndHead(d.dtype, d.n2, n2, d.d), kv_row, d.block_size, a.dk);
    StoreRows(dv0, TndHead(d.dtype, d.n2, n2, d.dv), kv_row, d.block_size,
              a.dv);
    return absl::OkStatus();
  });
}

}  // namespace

uint64_t NsaBackwardThreadBytes(const NsaDims& dims, int64_t token_tile,
                                TileProducts products) {
  return ScratchBytes([&](Scratch& counter) {
    NsaBackwardSlot unused;
    Carve(dims, token_tile, products, counter, &unused);
  });
}

// Why chunks: dK/dV rows receive contributions from any token of their
// batch, so some fixed order of additions is needed for deterministic bits.
// Owning a whole (batch, kv head) by one worker would leave a single-batch
// MQA request with one work item; per-thread partial sums would depend on
// which thread ran what. Chunks of tokens fixed by the plan give parallel
// work whose sums are grouped the same way whatever the thread count.
absl::Status NsaBackward(const NsaKernelArgs& a, void* workspace,
                         size_t workspace_bytes, ComputePool& pool,
                         const CancelToken& cancel, RunStats* stats) {
  // Layout: the partial sums first, then one region per thread.
  size_t partial_floats = 0;
  const std::vector<Chunk> chunks =
      MakeChunks(a, static_cast<float*>(workspace), &partial_floats);
  const size_t partial_bytes = partial_floats * sizeof(float);
  if (partial_bytes > workspace_bytes) {
    return absl::InternalError(
        "kernel workspace too small for the NSA grad's partial sums (the "
        "plan and the run disagree)");
  }
  ATTN_ASSIGN_OR_RETURN(std::vector<NsaBackwardSlot> slot_state,
                        CarveSlots<NsaBackwardSlot>(
                            static_cast<std::byte*>(workspace) + partial_bytes,
                            workspace_bytes - partial_bytes, a.threads,
                            [&](Scratch& arena, NsaBackwardSlot* w) {
                              Carve(a.dims, a.token_tile, a.products, arena, w);
                            }));
  const absl::Status accumulated =
      AccumulateChunks(a, chunks, slot_state, pool, cancel);
  for (const NsaBackwardSlot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }
  ATTN_RETURN_IF_ERROR(accumulated);
  return ReduceChunks(a, chunks, pool, cancel);
}

}  // namespace attnserve::core
