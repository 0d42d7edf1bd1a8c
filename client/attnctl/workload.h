// The attention problem attnctl sends: shapes, layout, dtype and options, and
// the requests built from it with random inputs.
//
//   Workload w;  // defaults: BNSD fp32, b=1, n=8, s=1024, d=128
//   absl::StatusOr<v1::FlashAttentionScoreRequest> req = MakeForwardRequest(w);
#ifndef ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_
#define ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnctl {

struct Workload {
  // "BSH", "SBH", "BSND" or "BNSD".
  std::string layout = "BNSD";
  v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  int64_t batch = 1;
  // Query heads (N1) and key/value heads (N2).
  int64_t heads = 8;
  int64_t kv_heads = 8;
  // head_num sent to the server; normally `heads`, different only to probe
  // the server's validation.
  int64_t head_num = 8;
  int64_t sq = 1024;
  int64_t skv = 1024;
  int64_t head_dim = 128;
  double scale = 0.08838834764831845;  // 1/sqrt(128)
  // Seeds the random inputs: the same seed gives the same tensors.
  uint64_t seed = 1;
  // Send a full BOOL [sq, skv] top-left causal mask with sparse_mode 0.
  bool causal_mask = false;
};

// INVALID_ARGUMENT naming the flag when a dimension is not positive or the
// layout is not one attnctl builds. Server-side rules (e.g. GQA divisibility)
// are left to the server.
absl::Status ValidateWorkload(const Workload& w);

// Shape of a tensor with `b` batches, `n` heads, `s` positions and head dim
// `d` in `layout` (BSH [B,S,N*D], SBH [S,B,N*D], BSND [B,S,N,D], BNSD
// [B,N,S,D]). INVALID_ARGUMENT for another layout.
absl::StatusOr<std::vector<int64_t>> LayoutShape(const std::string& layout,
                                                 int64_t b, int64_t n,
                                                 int64_t s, int64_t d);

// A forward request with random query/key/value in [-1, 1).
absl::StatusOr<v1::FlashAttentionScoreRequest> MakeForwardRequest(
    const Workload& w);

// The grad request for `forward` and its `result`: the same inputs and
// options, random dy, and attention_in/softmax_max/softmax_sum taken from
// `result`. Consumes both arguments' tensors.
absl::StatusOr<v1::FlashAttentionScoreGradRequest> MakeGradRequest(
    const Workload& w, v1::FlashAttentionScoreRequest forward,
    v1::FlashAttentionScoreResponse result);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_
