#include <algorithm>
#include <cfloat>
#include <cmath>
#include <utility>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "kernels/score_tile.h"
#include "kernels/tile_products.h"
#include "kernels/work_items.h"
#include "runtime/bf16_tiles.h"
#include "runtime/scratch.h"
#include "runtime/softmax_rows.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Per-thread scratch of the forward kernel. The fp32 path holds K, V and
// the query tile in fp32 (kv.k, kv.v, q); the bf16 path in bf16, zero-padded
// (kv.kb, kv.vb, qb), plus the probabilities rounded to bf16 for P·V (pb).
struct ForwardScratch {
  KvRows kv;      // K [S2, D], V [S2, Dv] of the held head.
  float* q;       // fp32: [tile_q, D]
  uint16_t* qb;   // bf16: [tile_q, D]
  float* s;       // [tile_q, tile_kv] scores, then probabilities.
  uint16_t* pb;   // bf16: [tile_q, tile_kv] probabilities for P·V.
  float* o;       // [tile_q, Dv] unnormalized output.
  float* m;       // [tile_q] running max.
  float* l;       // [tile_q] running sum.
  float* m_new;   // bf16: [tile_q] the max after this tile.
  float* corr;    // bf16: [tile_q] exp(m - m_new).
  float* row;     // [tile_kv] a pse row.
  uint8_t* keep;  // [tile_q * tile_kv] dropout keep bits.

  TileOperands operands() const {
    TileOperands op;
    op.q = q;
    op.k = kv.k;
    op.v = kv.v;
    op.qb = qb;
    op.kb = kv.kb;
    op.vb = kv.vb;
    return op;
  }
};

// The one layout of a worker's region: sizes the workspace (counting
// Scratch) and carves it.
// Stacked runs hold one kv tile at a time instead of the whole head.
void Carve(const AttentionDims& d, const Tiling& t, Scratch& arena,
           ForwardScratch* s) {
  const int64_t tq = t.tile_q, tk = t.tile_kv;
  const int64_t kv_rows = UseStackedForward(d, t) ? std::min(d.s2, tk) : d.s2;
  *s = ForwardScratch{};
  if (UsesBf16(t)) {
    const int64_t s2 = RoundUpToGranule(kv_rows);
    s->kv.kb = arena.Take<uint16_t>(s2 * d.d);
    s->kv.vb = arena.Take<uint16_t>(s2 * d.dv);
    s->qb = arena.Take<uint16_t>(tq * d.d);
    s->pb = arena.Take<uint16_t>(tq * tk);
    s->m_new = arena.Take<float>(tq);
    s->corr = arena.Take<float>(tq);
  } else {
    s->kv.k = arena.Take<float>(kv_rows * d.d);
    s->kv.v = arena.Take<float>(kv_rows * d.dv);
    s->q = arena.Take<float>(tq * d.d);
  }
  s->s = arena.Take<float>(tq * tk);
  s->o = arena.Take<float>(tq * d.dv);
  s->m = arena.Take<float>(tq);
  s->l = arena.Take<float>(tq);
  s->row = arena.Take<float>(tk);
  s->keep = arena.Take<uint8_t>(tq * tk);
}

// A batch with keys but no queries contributes nothing; one with queries but
// no keys gives out = 0, max = 0, sum = 0 (docs/semantics.md, "Forward").
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

// Whether the forward writes its outputs with non-temporal stores: when
// they are far larger than the caches (only then: the stores bypass the
// caches, which small outputs read next would miss).
constexpr int64_t kStreamingOutputBytes = int64_t{16} << 20;
bool StreamOutputs(const AttentionDims& d) {
  const int64_t rows = d.layout == Layout::kTND ? d.t1 : d.b * d.s1;
  const int64_t row_bytes =
      d.dv * static_cast<int64_t>(ItemSize(d.dtype)) + 2 * 8 * 4;
  return rows * d.n1 * row_bytes >= kStreamingOutputBytes;
}

// The query tile in the products' precision (bf16: rows past `rows` zero).
void LoadQueryRows(const FlashForwardArgs& a, const ForwardScratch& w,
                   int64_t b, int64_t n, int64_t i0, int64_t rows) {
  const BatchSpan& span = a.geo.batches[static_cast<size_t>(b)];
  const HeadSlice slice = a.q.Slice(b, n, span.q_start);
  if (!UsesBf16(a.geo.tiling)) {
    LoadRows(a.q.data, slice, i0, rows, w.q);
    return;
  }
  CopyBf16Rows(a.q.data, slice, i0, rows, w.qb);
  ZeroBf16Rows(w.qb, a.geo.dims.d, rows, RoundUpToGranule(rows), a.geo.dims.d);
}

// The online-softmax step of one score tile, fp32 products: the running
// max and sum, the rescaled output, and P (dropped) in place of the scores.
void SoftmaxTileFp32(const ScoreModifiers& mods, const ForwardScratch& w,
                     int64_t dv, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.s + r * cols;
    const float m_new = std::max(w.m[r], Max(row, cols));
    if (m_new == -INFINITY) {  // Nothing kept in this row so far.
      std::fill(row, row + cols, 0.0f);
      continue;
    }
    // The row's output is still 0 while m = -inf: no rescaling then.
    const bool rescale = w.m[r] != -INFINITY;
    const float correction = std::exp(w.m[r] - m_new);  // 0 when m = -inf.
    const float sum = ExpShiftSum(row, cols, m_new);
    w.l[r] = w.l[r] * correction + sum;
    w.m[r] = m_new;
    if (rescale && correction != 1.0f) Scale(w.o + r * dv, dv, correction);
    if (mods.dropout.active()) {
      TileDropout::Apply(row, w.keep + r * cols, cols,
                         mods.dropout.inv_keep_prob());
    }
  }
}

// The same step for bf16 products, fused per row (softmax_rows.h): P
// (dropped) goes straight to w.pb in bf16, padded for the P·V product. The
// corrections exp(m - m_new) of all rows are one vector pass.
void SoftmaxTileBf16(const ScoreModifiers& mods, const ForwardScratch& w,
                     const Tiling& t, int64_t dv, int64_t rows, int64_t cols,
                     float pending_scale) {
  const int64_t lds = t.tile_kv, cols_p = RoundUpToGranule(cols);
  for (int64_t r = 0; r < rows; ++r) {
    w.m_new[r] = std::max(w.m[r], pending_scale * Max(w.s + r * lds, cols));
    // exp(m - m_new) below: 0 when m = -inf, unused when m_new = -inf.
    w.corr[r] = w.m_new[r] == -INFINITY ? -INFINITY : w.m[r] - w.m_new[r];
  }
  ExpShiftSum(w.corr, rows, 0.0f);
  const bool drop = mods.dropout.active();
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* p = w.pb + r * lds;
    if (w.m_new[r] == -INFINITY) {  // Nothing kept in this row so far.
      std::fill(p, p + cols_p, uint16_t{0});
      continue;
    }
    const float sum =
        SoftmaxRowToBf16(w.s + r * lds, cols, pending_scale, w.m_new[r],
                         drop ? w.keep + r * cols : nullptr,
                         mods.dropout.inv_keep_prob(), p, cols_p);
    w.l[r] = w.l[r] * w.corr[r] + sum;
    w.m[r] = w.m_new[r];
    if (w.corr[r] != 1.0f) Scale(w.o + r * dv, dv, w.corr[r]);
  }
  ZeroBf16Rows(w.pb, lds, rows, RoundUpToGranule(rows), cols_p);
}

// Starts the online softmax of `rows` query rows: max -inf, sum 0, output
// 0. bf16 products write whole granules of rows: their padding is zeroed
// too, so that it stays finite.
void StartRows(const ForwardScratch& w, int64_t rows, int64_t dv, bool bf16) {
  std::fill(w.m, w.m + rows, -INFINITY);
  std::fill(w.l, w.l + rows, 0.0f);
  const int64_t o_rows = bf16 ? RoundUpToGranule(rows) : rows;
  std::fill(w.o, w.o + o_rows * dv, 0.0f);
}

// Ends a query row whose keys are all seen: its output `o` (dv values)
// divided by the row's softmax sum, or, for a fully masked row (max still
// -inf), the "invalid line" result: zeros, and max -FLT_MAX / sum FLT_MAX.
// Returns the (max, sum) to store for the row.
std::pair<float, float> FinishRow(float* o, int64_t dv, float max, float sum) {
  if (max == -INFINITY) {
    std::fill(o, o + dv, 0.0f);
    return {-FLT_MAX, FLT_MAX};
  }
  Scale(o, dv, 1.0f / sum);
  return {max, sum};
}

// One Sq tile of one query head: online softmax over the Skv tiles.
// `stream`: write the outputs with non-temporal stores (StreamOutputs).
void ForwardTile(const FlashForwardArgs& a, const ScoreModifiers& mods,
                 const ForwardScratch& w, int64_t b, int64_t n, int64_t i0,
                 int64_t rows, bool stream, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  if (span.s2 == 0) {
    EmptyKeysTile(a, w, b, n, i0, rows);
    return;
  }
  const bool bf16 = UsesBf16(g.tiling);
  const TileOperands op = w.operands();
  LoadQueryRows(a, w, b, n, i0, rows);
  StartRows(w, rows, d.dv, bf16);

  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    const ScoredTile scored =
        ScoreTile(g, mods, b, n, i0, rows, j0, cols, op, w.s, w.row, stats);
    if (scored.cover == TileCoverage::kEmpty) continue;
    if (mods.dropout.active()) {
      mods.dropout.Fill(b, n, span, i0, rows, j0, cols, w.keep);
    }
    if (bf16) {
      SoftmaxTileBf16(mods, w, g.tiling, d.dv, rows, cols,
                      scored.pending_scale);
    } else {
      SoftmaxTileFp32(mods, w, d.dv, rows, cols);
    }
    OutputProduct(g.tiling, d, op, rows, j0, cols, w.s, w.pb, w.o);
  }

  for (int64_t r = 0; r < rows; ++r) {
    const auto [max, sum] = FinishRow(w.o + r * d.dv, d.dv, w.m[r], w.l[r]);
    const int64_t idx = g.SoftmaxIndex(b, n, i0 + r);
    if (stream) {
      FillStreaming(a.softmax_max + idx, 8, max);
      FillStreaming(a.softmax_sum + idx, 8, sum);
    } else {
      std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
      std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
    }
  }
  const HeadSlice out = a.out.Slice(b, n, span.q_start);
  if (stream) {
    StoreRowsStreaming(w.o, out, i0, rows, a.out.mutable_data);
    FenceStreaming();
  } else {
    StoreRows(w.o, out, i0, rows, a.out.mutable_data);
  }
}

// The kv tile [j0, j0 + cols) of kv head (b, n2) into rows [0, cols) of
// the held rows (bf16: zero-padded to the granule).
void LoadKvTile(const FlashForwardArgs& a, const KvRows& kv, int64_t b,
                int64_t n2, const BatchSpan& span, int64_t j0, int64_t cols) {
  const HeadSlice ks = a.k.Slice(b, n2, span.kv_start);
  const HeadSlice vs = a.v.Slice(b, n2, span.kv_start);
  if (kv.kb == nullptr) {
    LoadRows(a.k.data, ks, j0, cols, kv.k);
    LoadRows(a.v.data, vs, j0, cols, kv.v);
    return;
  }
  CopyBf16Rows(a.k.data, ks, j0, cols, kv.kb);
  CopyBf16Rows(a.v.data, vs, j0, cols, kv.vb);
  const int64_t padded = RoundUpToGranule(cols);
  ZeroBf16Rows(kv.kb, ks.cols, cols, padded, ks.cols);
  ZeroBf16Rows(kv.vb, vs.cols, cols, padded, vs.cols);
}

// All G query heads of kv head (b, n2) at once (UseStackedForward): their
// rows stacked into one query tile (stacked row r is row r % s1 of head
// n2 * G + r / s1), so that each kv tile is read once, into L2, for the
// whole group, and each product has G times the rows. Rows are independent
// in the online softmax; the mask, pse and dropout are applied head by
// head (ScoreStackedTile, TileDropout::Fill per head).
void ForwardStacked(const FlashForwardArgs& a, const ScoreModifiers& mods,
                    const ForwardScratch& w, int64_t b, int64_t n2,
                    RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t s1 = span.s1, heads = d.g, n0 = n2 * d.g;
  if (s1 == 0) return;
  if (span.s2 == 0) {
    for (int64_t h = 0; h < heads; ++h) EmptyKeysTile(a, w, b, n0 + h, 0, s1);
    return;
  }
  const int64_t rows = heads * s1;
  const bool bf16 = UsesBf16(g.tiling);
  const TileOperands op = w.operands();
  for (int64_t h = 0; h < heads; ++h) {
    const HeadSlice slice = a.q.Slice(b, n0 + h, span.q_start);
    if (bf16) {
      CopyBf16Rows(a.q.data, slice, 0, s1, w.qb + h * s1 * d.d);
    } else {
      LoadRows(a.q.data, slice, 0, s1, w.q + h * s1 * d.d);
    }
  }
  if (bf16) ZeroBf16Rows(w.qb, d.d, rows, RoundUpToGranule(rows), d.d);
  StartRows(w, rows, d.dv, bf16);

  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (mods.mask.Classify(b, 0, s1, j0, cols) == TileCoverage::kEmpty) {
      stats->tiles_skipped += heads;
      continue;
    }
    LoadKvTile(a, w.kv, b, n2, span, j0, cols);
    const ScoredTile scored = ScoreStackedTile(g, mods, b, n0, heads, s1, j0,
                                               cols, 0, op, w.s, w.row, stats);
    if (mods.dropout.active()) {
      for (int64_t h = 0; h < heads; ++h) {
        mods.dropout.Fill(b, n0 + h, span, 0, s1, j0, cols,
                          w.keep + h * s1 * cols);
      }
    }
    if (bf16) {
      SoftmaxTileBf16(mods, w, g.tiling, d.dv, rows, cols,
                      scored.pending_scale);
    } else {
      SoftmaxTileFp32(mods, w, d.dv, rows, cols);
    }
    OutputProduct(g.tiling, d, op, rows, 0, cols, w.s, w.pb, w.o);
  }

  for (int64_t h = 0; h < heads; ++h) {
    const int64_t n = n0 + h;
    for (int64_t i = 0; i < s1; ++i) {
      const int64_t r = h * s1 + i;
      const auto [max, sum] = FinishRow(w.o + r * d.dv, d.dv, w.m[r], w.l[r]);
      const int64_t idx = g.SoftmaxIndex(b, n, i);
      std::fill(a.softmax_max + idx, a.softmax_max + idx + 8, max);
      std::fill(a.softmax_sum + idx, a.softmax_sum + idx + 8, sum);
    }
    StoreRows(w.o + h * s1 * d.dv, a.out.Slice(b, n, span.q_start), 0, s1,
              a.out.mutable_data);
  }
}

}  // namespace

bool UseStackedForward(const AttentionDims& dims, const Tiling& tiling) {
  return dims.s1 > 0 && dims.g * dims.s1 <= tiling.tile_q;
}

uint64_t FlashForwardWorkspaceBytes(const AttentionDims& dims,
                                    const Tiling& tiling) {
  const size_t per_thread = ScratchBytes([&](Scratch& counter) {
    ForwardScratch unused;
    Carve(dims, tiling, counter, &unused);
  });
  return static_cast<uint64_t>(per_thread) *
         static_cast<uint64_t>(tiling.threads);
}

// Work items are (b, n1, Sq tile) in order, so a worker's consecutive items
// mostly share a kv head and it reloads K/V only when the head changes.
absl::Status FlashForward(const FlashForwardArgs& a, void* workspace,
                          size_t workspace_bytes, ComputePool& pool,
                          const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const int slots = g.tiling.threads;
  struct Slot {
    ForwardScratch w;
    HeldKvHead held;  // In w.kv.
    RunStats stats;
  };
  ATTN_ASSIGN_OR_RETURN(std::vector<Slot> slot_state,
                        CarveSlots<Slot>(workspace, workspace_bytes, slots,
                                         [&](Scratch& arena, Slot* slot) {
                                           Carve(d, g.tiling, arena, &slot->w);
                                         }));
  const ScoreModifiers mods(g);
  if (UseStackedForward(d, g.tiling)) {
    // Items are the (b, n2) pairs.
    const absl::Status status =
        pool.ParallelFor(d.b * d.n2, slots, [&](int64_t item, int slot) {
          ATTN_RETURN_IF_ERROR(cancel.Check());
          Slot& s = slot_state[static_cast<size_t>(slot)];
          ForwardStacked(a, mods, s.w, item / d.n2, item % d.n2, &s.stats);
          return absl::OkStatus();
        });
    for (const Slot& s : slot_state) {
      stats->tiles_computed += s.stats.tiles_computed;
      stats->tiles_skipped += s.stats.tiles_skipped;
    }
    return status;
  }
  const QueryTileItems items(g.batches, d.n1, g.tiling.tile_q);
  const bool stream = StreamOutputs(d);
  const absl::Status status =
      pool.ParallelFor(items.size(), slots, [&](int64_t item, int slot) {
        ATTN_RETURN_IF_ERROR(cancel.Check());
        Slot& s = slot_state[static_cast<size_t>(slot)];
        const QueryTileItems::Item it = items.at(item);
        const BatchSpan& span = g.batches[static_cast<size_t>(it.b)];
        s.held.Hold(a.k, a.v, it.b, it.n / d.g, span, s.w.kv);
        const int64_t rows = std::min(g.tiling.tile_q, span.s1 - it.i0);
        ForwardTile(a, mods, s.w, it.b, it.n, it.i0, rows, stream, &s.stats);
        return absl::OkStatus();
      });
  for (const Slot& s : slot_state) {
    stats->tiles_computed += s.stats.tiles_computed;
    stats->tiles_skipped += s.stats.tiles_skipped;
  }
  return status;
}

}  // namespace attnserve::core
