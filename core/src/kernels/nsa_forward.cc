#include <algorithm>
#include <cfloat>
#include <cmath>
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

// Per-thread state of the forward kernel. R = token_tile x G rows, Rp = R
// rounded up to the bf16 granule.
struct NsaForwardSlot {
  NsaKvCache kv;
  NsaTile tile;
  float* q = nullptr;       // fp32: [R, D] query rows of the tile, token-major.
  uint16_t* qb = nullptr;   // bf16: the same rows.
  float* s = nullptr;       // Scores, then probabilities, block by block: for
                            // each block [members x G (bf16: rounded up), bs].
  float* o = nullptr;       // [R, Dv] output rows.
  float* qg = nullptr;      // fp32: [R, D] query rows of one block's tokens.
  uint16_t* qgb = nullptr;  // bf16: [Rp, D] the same, zero-padded.
  uint16_t* pb = nullptr;   // bf16: [Rp, bs] one block's probabilities.
  float* og = nullptr;      // [Rp, Dv] their share of the output.
  RunStats stats;
};

// The one layout of a worker's region (sizes it when counting).
void Carve(const NsaDims& d, int64_t tile_tokens, TileProducts products,
           Scratch& arena, NsaForwardSlot* w) {
  const int64_t rows = tile_tokens * d.g;
  const int64_t rows_p = RoundUpToGranule(rows);
  const int64_t slots = d.block_count * d.block_size;
  if (products == TileProducts::kBFloat16) {
    uint16_t* kb = arena.Take<uint16_t>(d.max_skv * d.d);
    uint16_t* vb = arena.Take<uint16_t>(d.max_skv * d.dv);
    w->kv.Init(d, nullptr, nullptr, kb, vb);
    w->qb = arena.Take<uint16_t>(rows * d.d);
    // Each selected block's panel is rounded up (RoundUpProductRows), by
    // less than a granule: at most tokens x K blocks per tile.
    w->s =
        arena.Take<float>(rows * slots + tile_tokens * d.block_count *
                                             (kBf16Granule - 1) * d.block_size);
    w->qgb = arena.Take<uint16_t>(rows_p * d.d);
    w->pb = arena.Take<uint16_t>(rows_p * d.block_size);
  } else {
    float* k = arena.Take<float>(d.max_skv * d.d);
    float* v = arena.Take<float>(d.max_skv * d.dv);
    w->kv.Init(d, k, v, nullptr, nullptr);
    w->q = arena.Take<float>(rows * d.d);
    w->s = arena.Take<float>(rows * slots);
    w->qg = arena.Take<float>(rows * d.d);
  }
  w->tile.Reserve();
  w->o = arena.Take<float>(rows * d.dv);
  w->og = arena.Take<float>(rows_p * d.dv);
}

void WriteStats(const NsaKernelArgs& a, int64_t t, int64_t n, float max,
                float sum) {
  const int64_t idx = (t * a.dims.n1 + n) * 8;
  std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
  std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
}

// Tokens [t0, t1) of batch b through kv head n2 (all G query heads). The
// scores of a block are kept where its product wrote them (one [members x
// G, bs] panel per block), so the softmax reads each row's slots from the
// panels of its blocks and P V multiplies the panels as they are.
void ForwardTile(const NsaKernelArgs& a, NsaForwardSlot& w, int64_t b,
                 int64_t n2, int64_t t0, int64_t t1) {
  const NsaDims& d = a.dims;
  const int64_t g = d.g, bs = d.block_size, n0 = n2 * g;
  const bool bf16 = a.products == TileProducts::kBFloat16;
  NsaTile& tile = w.tile;
  tile.Build(a, b, n2, t0, t1);
  w.kv.Load(a, b, n2, tile);
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    const HeadSlice rows = TndGroup(d.dtype, d.n1, t0 + ti, n0, d.d);
    if (bf16) {
      CopyBf16Rows(a.query, rows, 0, g, w.qb + ti * g * d.d);
    } else {
      LoadRows(a.query, rows, 0, g, w.q + ti * g * d.d);
    }
  }
  // Rows of a block's panel: its members' G rows (bf16: rounded up as the
  // products' query rows are, RoundUpProductRows).
  const auto panel_rows = [&](int count) {
    return bf16 ? RoundUpProductRows(count * g) : count * g;
  };
  // S = scale Q Kᵀ per block, for every token of the tile that selects it;
  // row maxima over each row's kept columns.
  float row_max[kNsaMaxTileRows];
  float row_sum[kNsaMaxTileRows];
  std::fill(row_max, row_max + tile.tokens() * g, -INFINITY);
  std::fill(row_sum, row_sum + tile.tokens() * g, 0.0f);
  float* panel = w.s;
  tile.ForEachBlock([&](int64_t block, const NsaMember* members, int count) {
    const int64_t rows = count * g;
    if (bf16) {
      GatherTokenRows(w.qb, g, d.d, members, count, w.qgb);
      ZeroBf16Rows(w.qgb, d.d, rows, panel_rows(count), d.d);
      Bf16Gemm({panel_rows(count), bs, d.d, d.d, d.d, bs, false, true, false},
               w.qgb, w.kv.kb_block(block, d), panel);
      Scale(panel, rows * bs, a.scale);
    } else {
      GatherTokenRows(w.q, g, d.d, members, count, w.qg);
      GemmNT(rows, bs, d.d, a.scale, w.qg, d.d, w.kv.k_block(block, d), d.d,
             0.0f, panel, bs);
    }
    for (int m = 0; m < count; ++m) {
      for (int64_t h = 0; h < g; ++h) {
        float& mx = row_max[members[m].token * g + h];
        mx = std::max(mx, Max(panel + (m * g + h) * bs, members[m].rows));
      }
    }
    panel += panel_rows(count) * bs;
  });
  // P = exp(S - max), weighted by how often the token selects the block;
  // columns the causal rule drops are 0.
  panel = w.s;
  tile.ForEachBlock([&](int64_t, const NsaMember* members, int count) {
    for (int m = 0; m < count; ++m) {
      const NsaMember& mem = members[m];
      for (int64_t h = 0; h < g; ++h) {
        const int64_t row = mem.token * g + h;
        float* p = panel + (m * g + h) * bs;
        const float sum = ExpShiftSum(p, mem.rows, row_max[row]);
        std::fill(p + mem.rows, p + bs, 0.0f);
        if (mem.count > 1) Scale(p, bs, static_cast<float>(mem.count));
        row_sum[row] += sum * static_cast<float>(mem.count);
      }
    }
    panel += panel_rows(count) * bs;
  });
  // O = P V, block by block (bf16: P rounded to bf16 for the product).
  std::fill(w.o, w.o + tile.tokens() * g * d.dv, 0.0f);
  panel = w.s;
  tile.ForEachBlock([&](int64_t block, const NsaMember* members, int count) {
    const int64_t rows = count * g;
    if (bf16) {
      ToBf16Padded(panel, bs, rows, bs, w.pb, bs, panel_rows(count), bs);
      Bf16Gemm(
          {panel_rows(count), d.dv, bs, bs, d.dv, d.dv, false, false, false},
          w.pb, w.kv.vb_block(block, d), w.og);
    } else {
      GemmNN(rows, d.dv, bs, 1.0f, panel, bs, w.kv.v_block(block, d), d.dv,
             0.0f, w.og, d.dv);
    }
    AddTokenRows(w.og, g, d.dv, members, count, w.o);
    panel += panel_rows(count) * bs;
  });
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    const int64_t t = t0 + ti;
    const bool attends = tile.slots(ti) > 0;
    for (int64_t h = 0; h < g; ++h) {
      const int64_t row = ti * g + h;
      if (attends) {
        Scale(w.o + row * d.dv, d.dv, 1.0f / row_sum[row]);
        WriteStats(a, t, n0 + h, row_max[row], row_sum[row]);
      } else {  // The causal rule drops every selected key.
        WriteStats(a, t, n0 + h, -FLT_MAX, FLT_MAX);
      }
    }
    StoreRows(w.o + ti * g * d.dv, TndGroup(d.dtype, d.n1, t, n0, d.dv), 0, g,
              a.out);
    if (attends) {
      ++w.stats.tiles_computed;
    } else {
      ++w.stats.tiles_skipped;
    }
  }
}

// A tile of query tokens of one batch.
struct TokenTile {
  int64_t b, t0, t1;
};

}  // namespace

uint64_t NsaForwardThreadBytes(const NsaDims& dims, int64_t token_tile,
                               TileProducts products) {
  return ScratchBytes([&](Scratch& counter) {
    NsaForwardSlot unused;
    Carve(dims, token_tile, products, counter, &unused);
  });
}

// Work items are (kv head, tile of query tokens), kv head major, so that a
// worker's consecutive items mostly share the (batch, kv head) its cache
// holds.
absl::Status NsaForward(const NsaKernelArgs& a, void* workspace,
                        size_t workspace_bytes, ComputePool& pool,
                        const CancelToken& cancel, RunStats* stats) {
  const NsaDims& d = a.dims;
  const int workers = a.threads;
  ATTN_ASSIGN_OR_RETURN(
      std::vector<NsaForwardSlot> slot_state,
      CarveSlots<NsaForwardSlot>(workspace, workspace_bytes, workers,
                                 [&](Scratch& arena, NsaForwardSlot* w) {
                                   Carve(d, a.token_tile, a.products, arena, w);
                                 }));
  std::vector<TokenTile> tiles;
  for (int64_t b = 0; b < d.b; ++b) {
    const size_t bi = static_cast<size_t>(b);
    for (int64_t t = a.q_start[bi]; t < a.q_start[bi + 1]; t += a.token_tile) {
      tiles.push_back({b, t, std::min(a.q_start[bi + 1], t + a.token_tile)});
    }
  }
  const int64_t count = static_cast<int64_t>(tiles.size());
  const absl::Status status =
      pool.ParallelFor(count * d.n2, workers, [&](int64_t item, int slot) {
        ATTN_RETURN_IF_ERROR(cancel.Check());
        const TokenTile& tt = tiles[static_cast<size_t>(item % count)];
        ForwardTile(a, slot_state[static_cast<size_t>(slot)], tt.b,
                    item / count, tt.t0, tt.t1);
        return absl::OkStatus();
      });
  for (const NsaForwardSlot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
