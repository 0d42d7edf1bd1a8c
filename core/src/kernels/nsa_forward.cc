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

// Per-thread state of the forward kernel. R = token_tile x G rows.
struct NsaForwardSlot {
  NsaKvCache kv;
  NsaTile tile;
  float* q = nullptr;   // [R, D] query rows of the tile, token-major.
  float* s = nullptr;   // Scores, then probabilities, block by block: for
                        // each block [members x G, bs].
  float* o = nullptr;   // [R, Dv] output rows.
  float* qg = nullptr;  // [R, D] query rows of one block's tokens.
  float* og = nullptr;  // [R, Dv] their share of the output.
  RunStats stats;
};

void Carve(const NsaDims& d, int64_t tile_tokens, Scratch& arena,
           NsaForwardSlot* w) {
  const int64_t rows = tile_tokens * d.g;
  const int64_t slots = d.block_count * d.block_size;
  float* k = arena.Take(d.max_skv * d.d);
  float* v = arena.Take(d.max_skv * d.dv);
  w->kv.Init(d, k, v);
  w->tile.Reserve();
  w->q = arena.Take(rows * d.d);
  w->s = arena.Take(rows * slots);
  w->o = arena.Take(rows * d.dv);
  w->qg = arena.Take(rows * d.d);
  w->og = arena.Take(rows * d.dv);
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
  NsaTile& tile = w.tile;
  tile.Build(a, b, n2, t0, t1);
  w.kv.Load(a, b, n2, tile);
  for (int ti = 0; ti < tile.tokens(); ++ti) {
    LoadRows(a.query, TndGroup(d.dtype, d.n1, t0 + ti, n0, d.d), 0, g,
             w.q + ti * g * d.d);
  }
  // S = scale Q Kᵀ per block, for every token of the tile that selects it;
  // row maxima over each row's kept columns.
  float row_max[kNsaMaxTileRows];
  float row_sum[kNsaMaxTileRows];
  std::fill(row_max, row_max + tile.tokens() * g, -INFINITY);
  std::fill(row_sum, row_sum + tile.tokens() * g, 0.0f);
  float* panel = w.s;
  tile.ForEachBlock([&](int64_t block, const NsaMember* members, int count) {
    GatherTokenRows(w.q, g, d.d, members, count, w.qg);
    GemmNT(count * g, bs, d.d, a.scale, w.qg, d.d, w.kv.k_block(block, d), d.d,
           0.0f, panel, bs);
    for (int m = 0; m < count; ++m) {
      for (int64_t h = 0; h < g; ++h) {
        float& mx = row_max[members[m].token * g + h];
        mx = std::max(mx, Max(panel + (m * g + h) * bs, members[m].rows));
      }
    }
    panel += count * g * bs;
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
    panel += count * g * bs;
  });
  // O = P V, block by block.
  std::fill(w.o, w.o + tile.tokens() * g * d.dv, 0.0f);
  panel = w.s;
  tile.ForEachBlock([&](int64_t block, const NsaMember* members, int count) {
    GemmNN(count * g, d.dv, bs, 1.0f, panel, bs, w.kv.v_block(block, d), d.dv,
           0.0f, w.og, d.dv);
    AddTokenRows(w.og, g, d.dv, members, count, w.o);
    panel += count * g * bs;
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
    Carve(d, a.token_tile, arena, &slot_state[static_cast<size_t>(i)]);
  }
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
