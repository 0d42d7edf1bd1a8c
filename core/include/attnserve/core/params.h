// Operator arguments, one struct per operator, mirroring the CANN documents'
// parameter lists (and the wire contract's field names).
//
// These are what a caller hands to Plan*(); nothing here is validated yet.
// Optional tensors are std::optional; unset scalars carry the documented
// defaults.
#ifndef ATTNSERVE_CORE_PARAMS_H_
#define ATTNSERVE_CORE_PARAMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attnserve/core/tensor.h"

namespace attnserve::core {

inline constexpr int64_t kDefaultWindowTokens = 2147483647;

// Options shared by FlashAttentionScore and FlashAttentionScoreGrad.
struct AttentionOptions {
  std::optional<TensorView> pse;
  std::optional<TensorView> drop_mask;
  std::optional<TensorView> padding_mask;  // Reserved by CANN: ignored.
  std::optional<TensorView> atten_mask;    // BOOL/UINT8, 1 = masked.
  std::vector<int64_t> prefix;
  std::vector<int64_t> actual_seq_qlen;   // TND: cumulative end offsets.
  std::vector<int64_t> actual_seq_kvlen;  // TND: cumulative end offsets.
  std::vector<int64_t> q_start_idx;
  std::vector<int64_t> kv_start_idx;
  double scale_value = 1.0;
  double keep_prob = 1.0;
  int64_t pre_tokens = kDefaultWindowTokens;
  int64_t next_tokens = kDefaultWindowTokens;
  int64_t head_num = 0;      // N1, query heads.
  std::string input_layout;  // "BSH", "SBH", "BSND", "BNSD", "TND".
  int64_t inner_precise = 0;
  int64_t sparse_mode = 0;
  int64_t pse_type = 1;
  std::optional<uint64_t> seed;
  std::optional<uint64_t> offset;
};

// The tensors the kernels read row by row may be chunked (TensorView::chunks):
// a forward's query, key and value; a grad's query, key, value, dy and
// attention_in. Every other tensor is contiguous.

// aclnnFlashAttentionScore.
struct ForwardArgs {
  TensorView query;
  TensorView key;
  TensorView value;
  AttentionOptions options;
};

// aclnnFlashAttentionScoreGrad(V2) / UnpaddingScoreGrad(V2).
struct BackwardArgs {
  TensorView query;
  TensorView key;
  TensorView value;
  TensorView dy;
  std::optional<TensorView> softmax_max;   // FLOAT32 [B,N1,Sq,8].
  std::optional<TensorView> softmax_sum;   // FLOAT32 [B,N1,Sq,8].
  std::optional<TensorView> softmax_in;    // Reserved: ignored.
  std::optional<TensorView> attention_in;  // The forward's attention_out.
  AttentionOptions options;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_PARAMS_H_
