// NSA selected attention, forward and backward, with fp32 or bf16 tile
// products (NsaKernelArgs::products; as for FlashAttention, bf16 products
// take bf16 operands with fp32 accumulation, P and dS rounded to bf16, the
// softmax and every sum in fp32).
//
// The work is cut in tiles: up to `token_tile` consecutive query tokens of
// one batch, through one kv head. A tile groups its tokens' selected blocks
// (the topk blocks of the batch; in causal mode only the positions <= each
// token's own) by block, and runs each block's products once for all the
// tokens that select it and all their G query heads: [rows x D] x [D x bs]
// and [rows x bs] x [bs x Dv] GEMMs with rows = G x (tokens selecting the
// block). A token selecting a block twice weights its probabilities by 2.
// The blocks are read from a per-worker copy of the (batch, kv head)'s
// keys and values (fp32 widened, or bf16), loaded block by block on first
// use.
//
// Forward work items are (kv head, tile); the results do not depend on how
// items are shared out. The backward writes dQ per tile and adds dK/dV into
// fp32 partial sums, one per (batch, chunk of `chunk_tokens` query tokens,
// kv head), each filled by one worker in tile and block order; a second
// pass adds a batch's chunks in chunk order and stores dk/dv. Chunk
// boundaries come from the plan (shapes only), so the bits are the same for
// every thread count.
//
// Both return CANCELLED / DEADLINE_EXCEEDED from the token, checked between
// tiles, and INTERNAL when `workspace` is smaller than the plan's
// workspace_bytes (the per-thread layout of NsaForwardThreadBytes /
// NsaBackwardThreadBytes, plus the backward's partial sums).
#ifndef ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/run_stats.h"
#include "runtime/parallel_for.h"

namespace attnserve::core {

// Flat arguments of the NSA kernels, built by the engine from a plan. All
// tensors are TND and row-major: query/dq/out/dy [T1, N1, *], key/value and
// dk/dv [T2, N2, *], softmax statistics [T1, N1, 8], topk [T1, N2, K].
struct NsaKernelArgs {
  NsaDims dims;
  float scale = 1.0f;
  int threads = 1;
  TileProducts products = TileProducts::kFloat32;
  int64_t token_tile = 1;    // Query tokens per tile.
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

// Bytes of one worker's scratch with tiles of `token_tile` tokens.
uint64_t NsaForwardThreadBytes(const NsaDims& dims, int64_t token_tile,
                               TileProducts products);
uint64_t NsaBackwardThreadBytes(const NsaDims& dims, int64_t token_tile,
                                TileProducts products);

absl::Status NsaForward(const NsaKernelArgs& args, void* workspace,
                        size_t workspace_bytes, ComputePool& pool,
                        const CancelToken& cancel, RunStats* stats);

// The workspace starts with the chunks' fp32 dK/dV partial sums (as the
// plan counts them), followed by the per-thread regions.
absl::Status NsaBackward(const NsaKernelArgs& args, void* workspace,
                         size_t workspace_bytes, ComputePool& pool,
                         const CancelToken& cancel, RunStats* stats);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_NSA_ATTENTION_H_
