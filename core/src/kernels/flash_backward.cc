#include <algorithm>
#include <cmath>
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

// Per-thread scratch of the backward kernel. fp32 path: K, V, Q and dY in
// fp32, dK / dV accumulated as rows. bf16 path: K, V, Q, dY in bf16
// (zero-padded), Qᵀ and dYᵀ of the query tile, P' and dS rounded to bf16,
// dK / dV accumulated transposed per kv tile (tile_products.h).
struct BackwardScratch {
  KvRows kv;      // K [S2, D], V [S2, Dv] of the kv head.
  float* dk;      // fp32: [S2, D]; bf16: [S2 tiles][D][tile_kv].
  float* dv;      // fp32: [S2, Dv]; bf16: [S2 tiles][Dv][tile_kv].
  float* q;       // fp32: [tile_q, D]
  uint16_t* qb;   // bf16: [tile_q, D]
  uint16_t* qt;   // bf16: [D, tile_q]
  float* dq;      // [tile_q, D]; bf16: [kQueryChunkTiles x tile_q, D].
  float* dy;      // [tile_q, Dv]
  uint16_t* dyb;  // bf16: [tile_q, Dv]
  uint16_t* dyt;  // bf16: [Dv, tile_q]
  float* o;       // [tile_q, Dv]
  float* p;       // [tile_q, tile_kv] probabilities.
  float* ds;      // [tile_q, tile_kv] dP, then dS.
  uint16_t* pb;   // bf16: [tile_q, tile_kv] P' for dV.
  uint16_t* dsb;  // bf16: [tile_q, tile_kv] dS for dQ and dK.
  float* out;     // bf16: [tile_kv, max(D, Dv)] dK / dV rows being stored.
  float* rd;      // [tile_q] D_i = rowsum(dY * O).
  float* m;       // [tile_q] softmax_max.
  float* l;       // [tile_q] softmax_sum.
  float* row;     // [tile_kv] a pse row.
  uint8_t* keep;  // [tile_q * tile_kv] dropout keep bits.

  TileOperands operands() const {
    TileOperands op;
    op.q = q;
    op.dy = dy;
    op.k = kv.k;
    op.v = kv.v;
    op.qb = qb;
    op.dyb = dyb;
    op.kb = kv.kb;
    op.vb = kv.vb;
    op.qt = qt;
    op.dyt = dyt;
    return op;
  }
};

// With bf16 products the tile products are fast enough for the caches to
// matter: the fused decomposition walks a kv head in passes of KvPassRows
// keys, whose dK/dV accumulators and K/V tiles (6 bytes per key and head
// dim) fit in about 768 KiB of L2, and the query tiles in chunks of
// kQueryChunkTiles, whose dQ accumulators persist across the passes. Sums
// keep their order (dK_j over query heads then query tiles, dQ_i over kv
// tiles), so the bits are those of one pass. Chosen from the shapes alone.
// fp32 products run one pass (their products dominate either way).
constexpr int64_t kQueryChunkTiles = 16;
constexpr int64_t kKvPassBytes = int64_t{768} << 10;

int64_t KvPassRows(const AttentionDims& d, const Tiling& t) {
  if (!UsesBf16(t)) return std::max<int64_t>(d.s2, 1);
  const int64_t rows = kKvPassBytes / ((d.d + d.dv) * 6);
  return std::max(t.tile_kv, rows / t.tile_kv * t.tile_kv);
}

// The one layout of a worker's region: sizes the workspace (counting
// Scratch) and carves it.
void Carve(const AttentionDims& d, const Tiling& t, Scratch& arena,
           BackwardScratch* s) {
  const int64_t tq = t.tile_q, tk = t.tile_kv;
  *s = BackwardScratch{};
  if (UsesBf16(t)) {
    const int64_t s2 = RoundUpToGranule(d.s2);
    const int64_t kv_tiles = (d.s2 + tk - 1) / tk;
    s->kv.kb = arena.Take<uint16_t>(s2 * d.d);
    s->kv.vb = arena.Take<uint16_t>(s2 * d.dv);
    s->dk = arena.Take<float>(kv_tiles * d.d * tk);
    s->dv = arena.Take<float>(kv_tiles * d.dv * tk);
    s->qb = arena.Take<uint16_t>(tq * d.d);
    s->qt = arena.Take<uint16_t>(d.d * tq);
    s->dyb = arena.Take<uint16_t>(tq * d.dv);
    s->dyt = arena.Take<uint16_t>(d.dv * tq);
    s->pb = arena.Take<uint16_t>(tq * tk);
    s->dsb = arena.Take<uint16_t>(tq * tk);
    s->out = arena.Take<float>(tk * std::max(d.d, d.dv));
  } else {
    s->kv.k = arena.Take<float>(d.s2 * d.d);
    s->kv.v = arena.Take<float>(d.s2 * d.dv);
    s->dk = arena.Take<float>(d.s2 * d.d);
    s->dv = arena.Take<float>(d.s2 * d.dv);
    s->q = arena.Take<float>(tq * d.d);
  }
  s->dq = arena.Take<float>((UsesBf16(t) ? kQueryChunkTiles : 1) * tq * d.d);
  s->dy = arena.Take<float>(tq * d.dv);
  s->o = arena.Take<float>(tq * d.dv);
  s->p = arena.Take<float>(tq * tk);
  s->ds = arena.Take<float>(tq * tk);
  s->rd = arena.Take<float>(tq);
  s->m = arena.Take<float>(tq);
  s->l = arena.Take<float>(tq);
  s->row = arena.Take<float>(tk);
  s->keep = arena.Take<uint8_t>(tq * tk);
}

// Where a (b, n) head's dpse contributions go.
struct PseGrad {
  float* plane = nullptr;   // External pse: the (b or 0, n) plane.
  double* slope = nullptr;  // Slopes: the (b, n) accumulator.
};

PseGrad PseGradOf(const FlashBackwardArgs& a, const PseBias& pse, int64_t b,
                  int64_t n) {
  PseGrad grad;
  if (!pse.active()) return grad;
  const int64_t n1 = a.geo.dims.n1;
  if (pse.generated()) {
    grad.slope = a.dslope_partial + b * n1 + n;
  } else {
    const int64_t pb = a.geo.pse.stride_b == 0 ? 0 : b;
    grad.plane = a.dpse_partial + (pb * n1 + n) * pse.PartialPlaneFloats();
  }
  return grad;
}

// Loads the query side of tile (b, n, i0): Q and dY in the products'
// precision (bf16: also Qᵀ and dYᵀ), O, max, sum and D_i = rowsum(dY * O).
void LoadQueryTile(const FlashBackwardArgs& a, const BackwardScratch& w,
                   int64_t b, int64_t n, int64_t i0, int64_t rows) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const HeadSlice q = a.q.Slice(b, n, span.q_start);
  const HeadSlice dy = a.dy.Slice(b, n, span.q_start);
  if (UsesBf16(g.tiling)) {
    const int64_t rows_p = RoundUpToGranule(rows), tq = g.tiling.tile_q;
    CopyBf16Rows(a.q.data, q, i0, rows, w.qb);
    ZeroBf16Rows(w.qb, d.d, rows, rows_p, d.d);
    TransposeBf16(w.qb, d.d, rows, d.d, w.qt, tq, rows_p);
    CopyBf16Rows(a.dy.data, dy, i0, rows, w.dyb);
    ZeroBf16Rows(w.dyb, d.dv, rows, rows_p, d.dv);
    TransposeBf16(w.dyb, d.dv, rows, d.dv, w.dyt, tq, rows_p);
  } else {
    LoadRows(a.q.data, q, i0, rows, w.q);
  }
  LoadRows(a.dy.data, dy, i0, rows, w.dy);
  LoadRows(a.out.data, a.out.Slice(b, n, span.q_start), i0, rows, w.o);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx = g.SoftmaxIndex(b, n, i0 + r);
    w.m[r] = a.softmax_max[idx];
    w.l[r] = a.softmax_sum[idx];
    w.rd[r] = Dot(w.dy + r * d.dv, w.o + r * d.dv, d.dv);
  }
}

// Which products a tile's P' and dS feed: dK/dV (kv side) and dQ.
enum class GradUse { kKvAndQuery, kQueryOnly };

// Tile (i0, j0) of head (b, n) with its query side loaded: P' (dropped
// probabilities) and dS for the tile's products, fp32 in w.p / w.ds
// (leading dimension ScoreStride), or for bf16 products rounded to bf16 in
// w.pb (kKvAndQuery only) / w.dsb, with dS also in w.ds when a pse needs
// its gradient. False when the mask excludes the whole tile. Every
// decomposition of the backward calls this in the same way, so P' and dS
// are the same bits whichever runs.
bool ScoreGradTile(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                   const BackwardScratch& w, int64_t b, int64_t n, int64_t i0,
                   int64_t rows, int64_t j0, int64_t cols, GradUse use,
                   RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const TileOperands op = w.operands();
  // P = exp(s - M) / L with s = scale Q Kᵀ + bias, masked cells 0.
  const ScoredTile scored =
      ScoreTile(g, mods, b, n, i0, rows, j0, cols, op, w.p, w.row, stats);
  if (scored.cover == TileCoverage::kEmpty) return false;
  const int64_t lds = ScoreStride(g.tiling, cols);
  const bool drop = mods.dropout.active();
  const float inv_kp = mods.dropout.inv_keep_prob();
  if (drop) mods.dropout.Fill(b, n, span, i0, rows, j0, cols, w.keep);
  // dP = dY V_jᵀ (· keep / keep_prob); dS = P (dP - D).
  DpProduct(g.tiling, g.dims, op, rows, j0, cols, w.ds);
  if (UsesBf16(g.tiling)) {
    // One fused pass per row: P' and dS rounded to bf16 for their products
    // (dS also kept in fp32 for the pse gradient).
    const int64_t rows_p = RoundUpToGranule(rows),
                  cols_p = RoundUpToGranule(cols);
    uint16_t* pb = use == GradUse::kKvAndQuery ? w.pb : nullptr;
    for (int64_t r = 0; r < rows; ++r) {
      SoftmaxGradRowToBf16(
          w.p + r * lds, w.ds + r * lds, cols, scored.pending_scale, w.m[r],
          1.0f / w.l[r], w.rd[r], drop ? w.keep + r * cols : nullptr, inv_kp,
          pb != nullptr ? pb + r * lds : nullptr, w.dsb + r * lds,
          mods.pse.active() ? w.ds + r * lds : nullptr, cols_p);
    }
    ZeroBf16Rows(w.dsb, lds, rows, rows_p, cols_p);
    if (pb != nullptr) ZeroBf16Rows(pb, lds, rows, rows_p, cols_p);
    return true;
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.p + r * lds;
    ExpShiftSum(row, cols, w.m[r]);
    Scale(row, cols, 1.0f / w.l[r]);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = w.p + r * lds;
    float* ds = w.ds + r * lds;
    if (drop) TileDropout::Apply(ds, w.keep + r * cols, cols, inv_kp);
    const float rd = w.rd[r];
    for (int64_t c = 0; c < cols; ++c) ds[c] = p[c] * (ds[c] - rd);
  }
  // dV takes the dropped probabilities P' = P · keep / kp.
  if (drop) {
    for (int64_t r = 0; r < rows; ++r) {
      TileDropout::Apply(w.p + r * lds, w.keep + r * cols, cols, inv_kp);
    }
  }
  return true;
}

// dV_j += P'ᵀ dY;  dK_j += scale dSᵀ Q.
void AccumulateKvTile(const AttentionGeometry& g, const BackwardScratch& w,
                      int64_t rows, int64_t j0, int64_t cols) {
  KvGradProducts(g.tiling, g.dims, g.scale, w.operands(), rows, j0, cols, w.p,
                 w.ds, w.pb, w.dsb, w.dk, w.dv);
}

// dQ += scale dS K_j into the tile's accumulator `dq`.
void AccumulateQueryTile(const AttentionGeometry& g, const BackwardScratch& w,
                         int64_t rows, int64_t j0, int64_t cols, float* dq) {
  QueryGradProduct(g.tiling, g.dims, g.scale, w.operands(), rows, j0, cols,
                   w.ds, w.dsb, dq);
}

// Zeroes dQ accumulators of `rows` query rows (bf16: whole granules, which
// the padded product writes).
void ClearDq(const AttentionGeometry& g, float* dq, int64_t rows) {
  const int64_t n = UsesBf16(g.tiling) ? RoundUpToGranule(rows) : rows;
  std::fill(dq, dq + n * g.dims.d, 0.0f);
}

// Stores dQ of tile (b, n, i0) from `dq` (bf16: scaled now, see
// tile_products.h).
void StoreDq(const FlashBackwardArgs& a, float* dq, int64_t b, int64_t n,
             int64_t i0, int64_t rows) {
  const AttentionGeometry& g = a.geo;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  if (UsesBf16(g.tiling)) Scale(dq, rows * g.dims.d, g.scale);
  StoreRows(dq, a.dq.Slice(b, n, span.q_start), i0, rows, a.dq.mutable_data);
}

// Zeroes the dK / dV accumulators of kv rows [j0, j0 + count), whole kv
// tiles (j0 a tile start).
void ClearKvGrads(const AttentionGeometry& g, const BackwardScratch& w,
                  int64_t j0, int64_t count) {
  const AttentionDims& d = g.dims;
  if (!UsesBf16(g.tiling)) {
    std::fill(w.dk + j0 * d.d, w.dk + (j0 + count) * d.d, 0.0f);
    std::fill(w.dv + j0 * d.dv, w.dv + (j0 + count) * d.dv, 0.0f);
    return;
  }
  const int64_t tk = g.tiling.tile_kv;
  const int64_t tiles = (count + tk - 1) / tk;
  float* dk = DkBlock(g.tiling, d, w.dk, j0);
  float* dv = DvBlock(g.tiling, d, w.dv, j0);
  std::fill(dk, dk + tiles * d.d * tk, 0.0f);
  std::fill(dv, dv + tiles * d.dv * tk, 0.0f);
}

// Stores dK / dV of kv rows [j0, j0 + count) of kv head (b, n2), j0 a tile
// start (bf16: transposed back and dK scaled).
void StoreKvGrads(const FlashBackwardArgs& a, const BackwardScratch& w,
                  int64_t b, int64_t n2, int64_t j0, int64_t count) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const HeadSlice dk = a.dk.Slice(b, n2, span.kv_start);
  const HeadSlice dv = a.dv.Slice(b, n2, span.kv_start);
  if (!UsesBf16(g.tiling)) {
    StoreRows(w.dk + j0 * d.d, dk, j0, count, a.dk.mutable_data);
    StoreRows(w.dv + j0 * d.dv, dv, j0, count, a.dv.mutable_data);
    return;
  }
  const int64_t tk = g.tiling.tile_kv;
  for (int64_t t0 = j0; t0 < j0 + count; t0 += tk) {
    const int64_t cols = std::min(tk, j0 + count - t0);
    TransposeScaled(DkBlock(g.tiling, d, w.dk, t0), tk, d.d, cols, g.scale,
                    w.out, d.d);
    StoreRows(w.out, dk, t0, cols, a.dk.mutable_data);
    TransposeScaled(DvBlock(g.tiling, d, w.dv, t0), tk, d.dv, cols, 1.0f, w.out,
                    d.dv);
    StoreRows(w.out, dv, t0, cols, a.dv.mutable_data);
  }
}

// One Sq tile of one query head against kv rows [j_begin, j_end): dQ added
// to `dq`, dK/dV (and dpse) accumulated.
void BackwardTile(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                  const BackwardScratch& w, int64_t b, int64_t n, int64_t i0,
                  int64_t rows, int64_t j_begin, int64_t j_end, float* dq,
                  RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  LoadQueryTile(a, w, b, n, i0, rows);
  const PseGrad pse_grad = PseGradOf(a, mods.pse, b, n);
  for (int64_t j0 = j_begin; j0 < j_end; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (!ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols,
                       GradUse::kKvAndQuery, stats)) {
      continue;
    }
    AccumulateKvTile(g, w, rows, j0, cols);
    AccumulateQueryTile(g, w, rows, j0, cols, dq);
    if (mods.pse.active()) {
      mods.pse.AccumulateGrad(b, n, span.s1, i0, rows, j0, cols, w.ds,
                              ScoreStride(g.tiling, cols), pse_grad.plane,
                              pse_grad.slope);
    }
  }
}

// All of batch b's work for kv head n2: the group's query heads and tiles in
// a fixed order (in kv passes and query chunks, see KvPassRows), then dK/dV
// written once. A batch without keys gives zero dQ.
absl::Status BackwardKvHead(const FlashBackwardArgs& a,
                            const ScoreModifiers& mods,
                            const BackwardScratch& w, int64_t b, int64_t n2,
                            const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t tq = g.tiling.tile_q;
  const int64_t pass = KvPassRows(d, g.tiling);
  const int64_t chunk = (UsesBf16(g.tiling) ? kQueryChunkTiles : 1) * tq;
  w.kv.Load(a.k, a.v, b, n2, span, 0, span.s2);
  ClearKvGrads(g, w, 0, span.s2);
  for (int64_t n = n2 * d.g; n < (n2 + 1) * d.g; ++n) {
    for (int64_t c0 = 0; c0 < span.s1; c0 += chunk) {
      const int64_t c1 = std::min(span.s1, c0 + chunk);
      ClearDq(g, w.dq, c1 - c0);
      for (int64_t jb = 0; jb < span.s2; jb += pass) {
        for (int64_t i0 = c0; i0 < c1; i0 += tq) {
          ATTN_RETURN_IF_ERROR(cancel.Check());
          BackwardTile(a, mods, w, b, n, i0, std::min(tq, c1 - i0), jb,
                       std::min(span.s2, jb + pass), w.dq + (i0 - c0) * d.d,
                       stats);
        }
      }
      for (int64_t i0 = c0; i0 < c1; i0 += tq) {
        StoreDq(a, w.dq + (i0 - c0) * d.d, b, n, i0, std::min(tq, c1 - i0));
      }
    }
  }
  StoreKvGrads(a, w, b, n2, 0, span.s2);
  return absl::OkStatus();
}

// Split decomposition, phase 1: dK/dV of kv tile j0 of kv head (b, n2),
// summed over the group's query heads and tiles in the fused order.
absl::Status KvTileItem(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                        const BackwardScratch& w, int64_t b, int64_t n2,
                        int64_t j0, const CancelToken& cancel,
                        RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
  w.kv.Load(a.k, a.v, b, n2, span, j0, cols);
  ClearKvGrads(g, w, j0, cols);
  for (int64_t n = n2 * d.g; n < (n2 + 1) * d.g; ++n) {
    for (int64_t i0 = 0; i0 < span.s1; i0 += g.tiling.tile_q) {
      ATTN_RETURN_IF_ERROR(cancel.Check());
      const int64_t rows = std::min(g.tiling.tile_q, span.s1 - i0);
      LoadQueryTile(a, w, b, n, i0, rows);
      if (ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols,
                        GradUse::kKvAndQuery, stats)) {
        AccumulateKvTile(g, w, rows, j0, cols);
      }
    }
  }
  StoreKvGrads(a, w, b, n2, j0, cols);
  return absl::OkStatus();
}

// Split decomposition, phase 2: dQ of query tile (b, n, i0), summed over the
// kv tiles in the fused order.
void QueryTileItem(const FlashBackwardArgs& a, const ScoreModifiers& mods,
                   const BackwardScratch& w, int64_t b, int64_t n, int64_t i0) {
  const AttentionGeometry& g = a.geo;
  const BatchSpan& span = g.batches[static_cast<size_t>(b)];
  const int64_t rows = std::min(g.tiling.tile_q, span.s1 - i0);
  ClearDq(g, w.dq, rows);
  if (span.s2 > 0) LoadQueryTile(a, w, b, n, i0, rows);
  RunStats counted_in_phase_1;
  for (int64_t j0 = 0; j0 < span.s2; j0 += g.tiling.tile_kv) {
    const int64_t cols = std::min(g.tiling.tile_kv, span.s2 - j0);
    if (ScoreGradTile(a, mods, w, b, n, i0, rows, j0, cols, GradUse::kQueryOnly,
                      &counted_in_phase_1)) {
      AccumulateQueryTile(g, w, rows, j0, cols, w.dq);
    }
  }
  StoreDq(a, w.dq, b, n, i0, rows);
}

}  // namespace

// Two decompositions that give the same bits:
//  - fused: work items are (b, n2); one worker owns a kv head's dK/dV and
//    walks the group's query heads and tiles in a fixed order, computing dQ
//    on the way. An external pse shared by the batches makes the items n2
//    alone (batches in order inside), so that its dpse plane is also summed
//    by one worker in a fixed order.
//  - split, when there are fewer kv heads than workers and no dpse to sum:
//    items (b, n2, kv tile) compute dK/dV, then items (b, n1, query tile)
//    compute dQ. Each output sum runs in the fused order, and the tile
//    products are the same calls on the same data, so the result does not
//    depend on the decomposition or on the number of workers. The score and
//    dP products run twice (7 tile products per tile instead of 5), which
//    pays once two or more workers share what one would do alone.
uint64_t FlashBackwardWorkspaceBytes(const AttentionDims& dims,
                                     const Tiling& tiling) {
  const size_t per_thread = ScratchBytes([&](Scratch& counter) {
    BackwardScratch unused;
    Carve(dims, tiling, counter, &unused);
  });
  return static_cast<uint64_t>(per_thread) *
         static_cast<uint64_t>(tiling.threads);
}

absl::Status FlashBackward(const FlashBackwardArgs& a, void* workspace,
                           size_t workspace_bytes, ComputePool& pool,
                           const CancelToken& cancel, RunStats* stats) {
  const AttentionGeometry& g = a.geo;
  const AttentionDims& d = g.dims;
  const int slots = g.tiling.threads;
  ATTN_ASSIGN_OR_RETURN(
      const std::vector<BackwardScratch> scratch_of,
      CarveSlots<BackwardScratch>(workspace, workspace_bytes, slots,
                                  [&](Scratch& arena, BackwardScratch* w) {
                                    Carve(d, g.tiling, arena, w);
                                  }));
  std::vector<RunStats> stats_of(static_cast<size_t>(slots));
  const ScoreModifiers mods(g);
  absl::Status status;
  if (UseSplitBackward(g)) {
    const QueryTileItems kv_items(g.batches, d.n2, g.tiling.tile_kv,
                                  TileSide::kKv);
    status =
        pool.ParallelFor(kv_items.size(), slots, [&](int64_t item, int slot) {
          const QueryTileItems::Item it = kv_items.at(item);
          return KvTileItem(a, mods, scratch_of[static_cast<size_t>(slot)],
                            it.b, it.n, it.i0, cancel,
                            &stats_of[static_cast<size_t>(slot)]);
        });
    if (status.ok()) {
      // Phase 1 left kv tiles in the slots' k / v: every slot starts empty.
      std::vector<HeldKvHead> held(static_cast<size_t>(slots));
      const QueryTileItems q_items(g.batches, d.n1, g.tiling.tile_q);
      status =
          pool.ParallelFor(q_items.size(), slots, [&](int64_t item, int slot) {
            ATTN_RETURN_IF_ERROR(cancel.Check());
            const QueryTileItems::Item it = q_items.at(item);
            const BackwardScratch& w = scratch_of[static_cast<size_t>(slot)];
            const BatchSpan& span = g.batches[static_cast<size_t>(it.b)];
            held[static_cast<size_t>(slot)].Hold(a.k, a.v, it.b, it.n / d.g,
                                                 span, w.kv);
            QueryTileItem(a, mods, w, it.b, it.n, it.i0);
            return absl::OkStatus();
          });
    }
  } else {
    const bool shared_pse =
        g.pse.kind == PseSpec::Kind::kExternal && g.pse.stride_b == 0;
    const int64_t items = shared_pse ? d.n2 : d.b * d.n2;
    status = pool.ParallelFor(items, slots, [&](int64_t item, int slot) {
      const BackwardScratch& w = scratch_of[static_cast<size_t>(slot)];
      RunStats* st = &stats_of[static_cast<size_t>(slot)];
      if (shared_pse) {
        for (int64_t b = 0; b < d.b; ++b) {
          ATTN_RETURN_IF_ERROR(BackwardKvHead(a, mods, w, b, item, cancel, st));
        }
        return absl::OkStatus();
      }
      return BackwardKvHead(a, mods, w, item / d.n2, item % d.n2, cancel, st);
    });
  }
  for (const RunStats& s : stats_of) {
    stats->tiles_computed += s.tiles_computed;
    stats->tiles_skipped += s.tiles_skipped;
  }
  return status;
}

bool UseSplitBackward(const AttentionGeometry& g) {
  return g.pse.kind == PseSpec::Kind::kNone &&
         g.dims.b * g.dims.n2 < g.tiling.threads;
}

}  // namespace attnserve::core
