// NSA selected attention, forward and backward, in fp32.
//
// For each query token t and kv head n2 the selected keys/values (the topk
// blocks of t's batch, in topk order, duplicates repeated; in causal mode
// only the positions <= t's own) are shared by the G query heads of n2: the
// products are [G x D] x [D x rows] and [G x rows] x [rows x Dv] GEMMs per
// run of consecutive selected rows, read straight from a per-worker fp32
// copy of the (batch, kv head)'s keys and values that is filled block by
// block on first use (the gather: each block widened once per worker and
// head, whatever number of tokens select it).
//
// Forward work items are (kv head, tile of query tokens); the results do not
// depend on how items are shared out. The backward writes dQ per token and
// adds dK/dV into fp32 partial sums, one per (batch, chunk of
// `chunk_tokens` query tokens, kv head), each filled by one worker in token
// order; a second pass adds a batch's chunks in chunk order and stores
// dk/dv. Chunk boundaries come from the plan (shapes only), so the bits are
// the same for every thread count.
//
// Both return CANCELLED / DEADLINE_EXCEEDED from the token, checked between
// tokens; `scratch` must hold the plan's workspace_bytes.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/nsa.h"
#include "runtime/parallel_for.h"

namespace attnserve::core {

// Flat arguments of the NSA kernels, built by the engine from a plan. All
// tensors are TND and row-major: query/dq/out/dy [T1, N1, *], key/value and
// dk/dv [T2, N2, *], softmax statistics [T1, N1, 8], topk [T1, N2, K].
struct NsaKernelArgs {
  NsaDims dims;
  float scale = 1.0f;
  int threads = 1;
  int64_t token_tile = 1;    // Forward: tokens per work item.
  int64_t chunk_tokens = 1;  // Backward: tokens per dK/dV partial sum.
  // Token offsets of each batch, with a leading 0: batch b holds query
  // tokens [q_start[b], q_start[b+1]) and keys [kv_start[b], kv_start[b+1]).
  std::vector<int64_t> q_start;
  std::vector<int64_t> kv_start;
  const void* topk = nullptr;  // INT32, possibly unaligned bytes.
  const void* query = nullptr;
  const void* key = nullptr;
  const void* value = nullptr;
  // Forward outputs / backward inputs.
  void* out = nullptr;
  float* softmax_max = nullptr;
  float* softmax_sum = nullptr;
  const void* out_in = nullptr;  // Backward: the forward's attention_out.
  const void* dy = nullptr;      // Backward: attention_out_grad.
  const float* max_in = nullptr;
  const float* sum_in = nullptr;
  // Backward outputs (zero-filled by the caller).
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
};

absl::Status NsaForward(const NsaKernelArgs& args, float* scratch,
                        size_t scratch_floats, ComputePool& pool,
                        const CancelToken& cancel, RunStats* stats);

absl::Status NsaBackward(const NsaKernelArgs& args, float* scratch,
                         size_t scratch_floats, ComputePool& pool,
                         const CancelToken& cancel, RunStats* stats);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_
