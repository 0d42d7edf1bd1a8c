// The NSA selected-attention problem attnctl sends: TND shapes, block
// selection and options, and the requests built from it with random inputs.
//
//   NsaWorkload w;  // b=1, n=16, kv_heads=1, s=4096, d=192, dv=128, 64 x 16
//   absl::StatusOr<v1::NsaSelectedAttentionRequest> req =
//       MakeNsaForwardRequest(w);
#ifndef ATTNSERVE_CLIENT_ATTNCTL_NSA_WORKLOAD_H_
#define ATTNSERVE_CLIENT_ATTNCTL_NSA_WORKLOAD_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnctl {

struct NsaWorkload {
  v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  // Batches, each with `sq` query and `skv` key/value tokens.
  int64_t batch = 1;
  int64_t heads = 16;     // N1.
  int64_t kv_heads = 1;   // N2.
  int64_t head_num = 16;  // Sent as head_num; normally `heads`.
  int64_t sq = 4096;
  int64_t skv = 4096;
  int64_t head_dim = 192;   // D of query and key.
  int64_t value_dim = 128;  // Dv.
  int64_t block_size = 64;
  int64_t block_count = 16;
  int64_t sparse_mode = 0;
  double scale = 0.07216878364870323;  // 1/sqrt(192)
  uint64_t seed = 1;
};

// INVALID_ARGUMENT naming the flag when a size is not positive. The
// operator's own rules (block size, head dims, ...) are left to the server.
absl::Status ValidateNsaWorkload(const NsaWorkload& w);

// topk_indices values, [T1, N2, K] row-major. Each token and kv head takes K
// distinct random blocks of its batch (repeats only when the batch has fewer
// than K blocks); with sparse_mode 2 they are drawn from the blocks at or
// before the token's own position first, as a real selection would be.
std::vector<int32_t> RandomTopk(const NsaWorkload& w);

// A forward request with random query/key/value in [-1, 1).
absl::StatusOr<v1::NsaSelectedAttentionRequest> MakeNsaForwardRequest(
    const NsaWorkload& w);

// The grad request for `forward` and its `result`: the same inputs and
// options, random attention_out_grad, and attention_out / softmax_max /
// softmax_sum from `result`. Consumes both arguments' tensors.
absl::StatusOr<v1::NsaSelectedAttentionGradRequest> MakeNsaGradRequest(
    const NsaWorkload& w, v1::NsaSelectedAttentionRequest forward,
    v1::NsaSelectedAttentionResponse result);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_NSA_WORKLOAD_H_
