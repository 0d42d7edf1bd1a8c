// Flat, resolved arguments of the FlashAttention kernels, built once by the
// engine from a plan (pointers, per-head addressing, mask, pse, dropout,
// scale). Kernels read only this, their scratch and the cancel token.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_
#define ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_

#include <cstdint>
#include <vector>

#include "attnserve/core/plan.h"
#include "runtime/head_io.h"

namespace attnserve::core {

// One tensor of q/k/v/out/dy/... shape: base pointer plus (b, s, n) strides.
struct HeadTensor {
  InputBytes data;               // Inputs (contiguous or chunked).
  void* mutable_data = nullptr;  // Outputs.
  HeadStrides strides;
  DType dtype = DType::kFloat32;
  int64_t cols = 0;  // Head dim of this tensor (D or Dv).

  // Rows of (b, n) starting at token row `row_start` (TND; 0 otherwise).
  HeadSlice Slice(int64_t b, int64_t n, int64_t row_start) const {
    return HeadSlice{dtype, strides.Offset(b, row_start, n), strides.s, cols};
  }
};

// Where a worker holds kv rows: fp32 `k` [rows, D] and `v` [rows, Dv] for
// the fp32 tile products, or bf16 `kb` / `vb` for the bf16 ones (rows
// zero-padded to the bf16 granule, which the padded products read); the
// other pair is null.
struct KvRows {
  float* k = nullptr;
  float* v = nullptr;
  uint16_t* kb = nullptr;
  uint16_t* vb = nullptr;

  // Rows [row0, row0 + rows) of kv head (b, n2), batch-local, to the same
  // rows of the buffers.
  void Load(const HeadTensor& key, const HeadTensor& value, int64_t b,
            int64_t n2, const BatchSpan& span, int64_t row0,
            int64_t rows) const;
};

// The kv head a worker holds in its KvRows; Hold() loads the whole head
// only when an item needs another head, so consecutive items of one head
// share one load.
struct HeldKvHead {
  int64_t b = -1, n2 = -1;

  void Hold(const HeadTensor& k, const HeadTensor& v, int64_t b_, int64_t n2_,
            const BatchSpan& span, const KvRows& rows) {
    if ((b == b_ && n2 == n2_) || span.s2 == 0) return;
    rows.Load(k, v, b_, n2_, span, 0, span.s2);
    b = b_;
    n2 = n2_;
  }
};

// What both directions share: geometry and the score modifiers.
struct AttentionGeometry {
  AttentionDims dims;
  std::vector<BatchSpan> batches;
  Tiling tiling;
  MaskSpec mask;
  const uint8_t* mask_data = nullptr;
  PseSpec pse;
  const void* pse_data = nullptr;
  DropoutSpec dropout;
  const uint8_t* drop_mask_data = nullptr;
  float scale = 1.0f;  // Multiplies q·k.

  // Index of lane 0 of softmax_max/sum for (b, n, batch-local row i).
  int64_t SoftmaxIndex(int64_t b, int64_t n, int64_t i) const {
    if (dims.layout == Layout::kTND) {
      return ((batches[static_cast<size_t>(b)].q_start + i) * dims.n1 + n) * 8;
    }
    return ((b * dims.n1 + n) * dims.s1 + i) * 8;
  }
};

struct FlashForwardArgs {
  AttentionGeometry geo;
  HeadTensor q, k, v, out;
  float* softmax_max = nullptr;  // [B, N1, S1, 8] or [T1, N1, 8].
  float* softmax_sum = nullptr;
};

struct FlashBackwardArgs {
  AttentionGeometry geo;
  HeadTensor q, k, v, dy, out;  // out = the forward's attention_out.
  const float* softmax_max = nullptr;
  const float* softmax_sum = nullptr;
  HeadTensor dq, dk, dv;
  // dpse partials: external pse [Bp][N1][rows][cols] (Bp = 1 when the pse
  // is shared by the batches), slopes [B][N1] (double); null without pse.
  float* dpse_partial = nullptr;
  double* dslope_partial = nullptr;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_
