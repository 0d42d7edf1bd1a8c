// Native sparse attention, selected-block branch (aclnnNsaSelectedAttention
// and aclnnNsaSelectedAttentionGrad): arguments, validation and planning.
//
// Every query token t and key/value head n2 name `selected_block_count`
// blocks of `selected_block_size` consecutive keys of their batch
// (topk_indices[t, n2, :]); the G = N1 / N2 query heads of n2 attend to
// those keys only, in topk order, duplicates counted as often as they
// appear. Layout TND only, with cumulative actual_seq_qlen / _kvlen.
//
//   NsaForwardArgs args;
//   args.query = q;                 // [T1, N1, D]
//   args.key = k;                   // [T2, N2, D]
//   args.value = v;                 // [T2, N2, Dv]
//   args.topk_indices = topk;       // INT32 [T1, N2, K]
//   args.options.actual_seq_qlen = {100, 250};
//   args.options.actual_seq_kvlen = {128, 256};
//   args.options.selected_block_size = 16;
//   args.options.selected_block_count = 4;
//   args.options.head_num = 8;
//   args.options.input_layout = "TND";
//   ATTN_ASSIGN_OR_RETURN(NsaForwardCall call,
//                         NsaForwardCall::Prepare(std::move(args), 2));
//   ATTN_ASSIGN_OR_RETURN(ForwardResult out, engine.Run(call, token));
//
// The Plan functions are pure and thread-safe. They check every documented
// constraint, including that each index lies inside its batch's block
// range (the NPU does not), and return INVALID_ARGUMENT naming the wire
// field, e.g. "topk_indices[12,0,3]" or "actual_seq_kvlen[1]".
#ifndef ATTNSERVE_CORE_NSA_H_
#define ATTNSERVE_CORE_NSA_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"

namespace attnserve::core {

// Options shared by the forward and the grad (wire field names).
struct NsaOptions {
  // BOOL/UINT8; only with sparse_mode 2, where it must be the standard
  // compressed causal mask [2048, 2048] (1 strictly above the diagonal).
  std::optional<TensorView> atten_mask;
  std::vector<int64_t> actual_seq_qlen;   // Cumulative end offsets, length B.
  std::vector<int64_t> actual_seq_kvlen;  // Cumulative end offsets, length B.
  double scale_value = 1.0;
  int64_t selected_block_size = 0;   // bs: keys per block.
  int64_t selected_block_count = 0;  // K: blocks per token and kv head.
  int64_t head_num = 0;              // N1.
  std::string input_layout;          // "TND".
  // 0: every selected key; 2: key position p (batch-local) is kept for query
  // position i only when p <= i.
  int64_t sparse_mode = 0;
};

// aclnnNsaSelectedAttention.
struct NsaForwardArgs {
  TensorView query;         // [T1, N1, D]
  TensorView key;           // [T2, N2, D]
  TensorView value;         // [T2, N2, Dv]
  TensorView topk_indices;  // INT32 [T1, N2, K]
  NsaOptions options;
};

// aclnnNsaSelectedAttentionGrad.
struct NsaBackwardArgs {
  TensorView query;
  TensorView key;
  TensorView value;
  TensorView attention_out;       // The forward's output, [T1, N1, Dv].
  TensorView attention_out_grad;  // dY, [T1, N1, Dv].
  TensorView softmax_max;         // FLOAT32 [T1, N1, 8].
  TensorView softmax_sum;         // FLOAT32 [T1, N1, 8].
  TensorView topk_indices;
  NsaOptions options;
};

// Dimensions resolved from the inputs.
struct NsaDims {
  DType dtype = DType::kFloat32;  // q/k/v (and attention_out/_grad) dtype.
  int64_t b = 0;                  // Batches (length of actual_seq_*).
  int64_t n1 = 0;                 // Query heads.
  int64_t n2 = 0;                 // Key/value heads.
  int64_t g = 0;                  // n1 / n2.
  int64_t t1 = 0;                 // Query tokens.
  int64_t t2 = 0;                 // Key/value tokens.
  int64_t d = 0;                  // Query/key head dim.
  int64_t dv = 0;                 // Value head dim.
  int64_t block_size = 0;         // bs.
  int64_t block_count = 0;        // K.
  int64_t max_skv = 0;            // Longest key/value batch.
  bool causal = false;            // sparse_mode 2.
};

struct NsaForwardPlan {
  NsaDims dims;
  float scale = 1.0f;
  int threads = 1;
  TileProducts products = TileProducts::kFloat32;  // As in plan.h.
  // Query tokens per tile (per work item): the products with a key block
  // take every token of the tile that selects it.
  int64_t token_tile = 0;
  // (token, query head, key) triples attended: every selected key, minus
  // those the causal rule drops in sparse_mode 2.
  int64_t attended = 0;
  uint64_t workspace_bytes = 0;
  // 2 * attended * (D + Dv): the two matrix products over selected keys.
  double flops = 0;
  std::vector<OutputSpec> outputs;  // attention_out, softmax_max/sum.
};

struct NsaBackwardPlan {
  NsaDims dims;
  float scale = 1.0f;
  int threads = 1;
  TileProducts products = TileProducts::kFloat32;  // As in plan.h.
  // dK/dV are accumulated per chunk of `chunk_tokens` query tokens of one
  // batch and kv head, then the chunks are summed in order. Chosen from the
  // shapes alone, so the result does not depend on the thread count.
  int64_t chunk_tokens = 0;
  int64_t token_tile = 0;  // Query tokens per tile, as in the forward.
  int64_t attended = 0;
  uint64_t workspace_bytes = 0;
  // 2 * attended * (3 D + 2 Dv): recomputed scores, dP, dQ, dK and dV.
  double flops = 0;
  std::vector<OutputSpec> outputs;  // dq, dk, dv.
};

// Validates a forward request and sizes its workspace for the threads
// `threads` grants it (plan.h) and the tile products chosen (`allow_bf16` as
// in PlanForward). INVALID_ARGUMENT names the offending field. Reads
// topk_indices (and a sent atten_mask) to check them.
absl::StatusOr<NsaForwardPlan> PlanNsaForward(const NsaForwardArgs& args,
                                              const ThreadPolicy& threads = {},
                                              bool allow_bf16 = true);

// The same for the grad, plus attention_out, attention_out_grad and the
// softmax statistics.
absl::StatusOr<NsaBackwardPlan> PlanNsaBackward(
    const NsaBackwardArgs& args, const ThreadPolicy& threads = {},
    bool allow_bf16 = true);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_NSA_H_
