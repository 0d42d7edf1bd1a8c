// Flat, resolved arguments of the FlashAttention kernels, built once by the
// engine from a plan (pointers, per-head addressing, mask, scale). Kernels
// read only this, their scratch and the cancel token.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_
#define ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_

#include <cstdint>

#include "attnserve/core/plan.h"
#include "plan/layout.h"
#include "runtime/head_io.h"

namespace attnserve::core {

// One tensor of q/k/v/out/dy/... shape: base pointer plus (b, s, n) strides.
struct HeadTensor {
  const void* data = nullptr;    // Inputs.
  void* mutable_data = nullptr;  // Outputs.
  HeadStrides strides;
  DType dtype = DType::kFloat32;
  int64_t cols = 0;  // Head dim of this tensor (D or Dv).

  HeadSlice Slice(int64_t b, int64_t n) const {
    return HeadSlice{dtype, strides.Offset(b, 0, n), strides.s, cols};
  }
};

struct FlashForwardArgs {
  AttentionDims dims;
  Tiling tiling;
  MaskSpec mask;
  const uint8_t* mask_data = nullptr;
  float scale = 1.0f;  // Multiplies q·k.
  HeadTensor q, k, v, out;
  float* softmax_max = nullptr;  // [B, N1, S1, 8].
  float* softmax_sum = nullptr;
};

struct FlashBackwardArgs {
  AttentionDims dims;
  Tiling tiling;
  MaskSpec mask;
  const uint8_t* mask_data = nullptr;
  float scale = 1.0f;
  HeadTensor q, k, v, dy, out;  // out = the forward's attention_out.
  const float* softmax_max = nullptr;
  const float* softmax_sum = nullptr;
  HeadTensor dq, dk, dv;
};

// Index of lane 0 of softmax_max/sum for (b, n, i).
inline int64_t SoftmaxIndex(const AttentionDims& d, int64_t b, int64_t n,
                            int64_t i) {
  return ((b * d.n1 + n) * d.s1 + i) * 8;
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_KERNEL_ARGS_H_
