// The tile products of the FlashAttention kernels in both precisions
// (plan's TileProducts), one function per product, so that the kernels'
// structure is written once and only these bodies differ.
//
// fp32: operands fp32 (inputs widened), single-threaded sgemm with the
// softmax scale as alpha. bf16: operands bf16 with fp32 accumulation
// through oneDNN matmul, on tiles padded to the bf16 granule: rows_p =
// RoundUpToGranule(rows), cols_p likewise, everything outside the values
// zero (see runtime/bf16_tiles.h); the products whose rows are query rows
// that are not contracted (scores, dP, output) take RoundUpProductRows(rows)
// of them, which leaves fewer than a granule unpadded. The bf16 products run
// unscaled (oneDNN bakes a scale into the generated code, and requests differ
// in scale): the softmax rows scale the scores as they read them (or, with a
// pse or a scale <= 0, a pass right after the product does), dQ and dK are
// accumulated unscaled and scaled once when stored. dK and dV accumulate
// transposed, as [D, tile_kv] blocks per kv tile, so that every bf16
// product reads its operands as stored (A·B or A·Bᵀ; Qᵀ and dYᵀ are made
// once per query tile).
#ifndef ATTNSERVE_CORE_SRC_KERNELS_TILE_PRODUCTS_H_
#define ATTNSERVE_CORE_SRC_KERNELS_TILE_PRODUCTS_H_

#include <cstdint>

#include "attnserve/core/plan.h"
#include "runtime/bf16_gemm.h"
#include "runtime/gemm.h"
#include "runtime/vector_math.h"

namespace attnserve::core {

inline bool UsesBf16(const Tiling& t) {
  return t.products == TileProducts::kBFloat16;
}

// Leading dimension of a score / probability tile of `cols` columns: packed
// for fp32, the full tile width for bf16 (fewer distinct product shapes).
inline int64_t ScoreStride(const Tiling& t, int64_t cols) {
  return UsesBf16(t) ? t.tile_kv : cols;
}

// The operands of one query tile against one kv head, in the tiling's
// precision: q [rows, D], dy [rows, Dv], k [Skv, D], v [Skv, Dv] (fp32), or
// their bf16 counterparts, plus (bf16 backward) qt [D, tile_q] and
// dyt [Dv, tile_q] = Qᵀ and dYᵀ of the query tile.
struct TileOperands {
  const float* q = nullptr;
  const float* dy = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const uint16_t* qb = nullptr;
  const uint16_t* dyb = nullptr;
  const uint16_t* kb = nullptr;
  const uint16_t* vb = nullptr;
  const uint16_t* qt = nullptr;
  const uint16_t* dyt = nullptr;
};

// s = scale · Q K_jᵀ for rows x cols (leading dimension ScoreStride); for
// bf16 products without `apply_scale`, s = Q K_jᵀ (the softmax rows apply
// the scale, see ScoreTile).
inline void ScoreProduct(const Tiling& t, const AttentionDims& d, float scale,
                         bool apply_scale, const TileOperands& op, int64_t rows,
                         int64_t j0, int64_t cols, float* s) {
  if (!UsesBf16(t)) {
    GemmNT(rows, cols, d.d, scale, op.q, d.d, op.k + j0 * d.d, d.d, 0.0f, s,
           cols);
    return;
  }
  const int64_t lds = t.tile_kv;
  Bf16Gemm({RoundUpProductRows(rows), RoundUpToGranule(cols), d.d, d.d, d.d,
            lds, false, true, false},
           op.qb, op.kb + j0 * d.d, s);
  if (apply_scale) {
    for (int64_t r = 0; r < rows; ++r) Scale(s + r * lds, cols, scale);
  }
}

// ds = dY V_jᵀ (dP) for rows x cols (leading dimension ScoreStride).
inline void DpProduct(const Tiling& t, const AttentionDims& d,
                      const TileOperands& op, int64_t rows, int64_t j0,
                      int64_t cols, float* ds) {
  if (!UsesBf16(t)) {
    GemmNT(rows, cols, d.dv, 1.0f, op.dy, d.dv, op.v + j0 * d.dv, d.dv, 0.0f,
           ds, cols);
    return;
  }
  Bf16Gemm({RoundUpProductRows(rows), RoundUpToGranule(cols), d.dv, d.dv, d.dv,
            t.tile_kv, false, true, false},
           op.dyb, op.vb + j0 * d.dv, ds);
}

// o += P V_j: fp32 from `p` (leading dimension cols), bf16 from `pb`
// (tile_kv, padded).
inline void OutputProduct(const Tiling& t, const AttentionDims& d,
                          const TileOperands& op, int64_t rows, int64_t j0,
                          int64_t cols, const float* p, const uint16_t* pb,
                          float* o) {
  if (!UsesBf16(t)) {
    GemmNN(rows, d.dv, cols, 1.0f, p, cols, op.v + j0 * d.dv, d.dv, 1.0f, o,
           d.dv);
    return;
  }
  Bf16Gemm({RoundUpProductRows(rows), d.dv, RoundUpToGranule(cols), t.tile_kv,
            d.dv, d.dv, false, false, true},
           pb, op.vb + j0 * d.dv, o);
}

// The accumulators of dK and dV for kv tile j0: fp32 rows of the head's
// [Skv, D] / [Skv, Dv] buffers, or bf16-path transposed blocks
// [D, tile_kv] / [Dv, tile_kv].
inline float* DkBlock(const Tiling& t, const AttentionDims& d, float* dk,
                      int64_t j0) {
  return UsesBf16(t) ? dk + j0 / t.tile_kv * d.d * t.tile_kv : dk + j0 * d.d;
}
inline float* DvBlock(const Tiling& t, const AttentionDims& d, float* dv,
                      int64_t j0) {
  return UsesBf16(t) ? dv + j0 / t.tile_kv * d.dv * t.tile_kv : dv + j0 * d.dv;
}

// dV_j += P'ᵀ dY;  dK_j += scale dSᵀ Q (bf16: unscaled, transposed).
inline void KvGradProducts(const Tiling& t, const AttentionDims& d, float scale,
                           const TileOperands& op, int64_t rows, int64_t j0,
                           int64_t cols, const float* p, const float* ds,
                           const uint16_t* pb, const uint16_t* dsb, float* dk,
                           float* dv) {
  if (!UsesBf16(t)) {
    GemmTN(cols, d.dv, rows, 1.0f, p, cols, op.dy, d.dv, 1.0f,
           DvBlock(t, d, dv, j0), d.dv);
    GemmTN(cols, d.d, rows, scale, ds, cols, op.q, d.d, 1.0f,
           DkBlock(t, d, dk, j0), d.d);
    return;
  }
  const int64_t rows_p = RoundUpToGranule(rows),
                cols_p = RoundUpToGranule(cols);
  const int64_t tq = t.tile_q, tk = t.tile_kv;
  // dVᵀ_j += dYᵀ P';  dKᵀ_j += Qᵀ dS.
  Bf16Gemm({d.dv, cols_p, rows_p, tq, tk, tk, false, false, true}, op.dyt, pb,
           DvBlock(t, d, dv, j0));
  Bf16Gemm({d.d, cols_p, rows_p, tq, tk, tk, false, false, true}, op.qt, dsb,
           DkBlock(t, d, dk, j0));
}

// dQ += scale dS K_j (bf16: unscaled).
inline void QueryGradProduct(const Tiling& t, const AttentionDims& d,
                             float scale, const TileOperands& op, int64_t rows,
                             int64_t j0, int64_t cols, const float* ds,
                             const uint16_t* dsb, float* dq) {
  if (!UsesBf16(t)) {
    GemmNN(rows, d.d, cols, scale, ds, cols, op.k + j0 * d.d, d.d, 1.0f, dq,
           d.d);
    return;
  }
  Bf16Gemm({RoundUpToGranule(rows), d.d, RoundUpToGranule(cols), t.tile_kv, d.d,
            d.d, false, false, true},
           dsb, op.kb + j0 * d.d, dq);
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_TILE_PRODUCTS_H_
