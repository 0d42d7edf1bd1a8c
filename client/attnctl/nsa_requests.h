// NsaSelectedAttention(Grad) requests built from a Workload: TND shapes,
// `batch` batches of `sq` query and `skv` key/value tokens, random block
// selections.
//
//   Workload w;
//   w.heads = w.head_num = 16; w.kv_heads = 1; w.head_dim = 192;
//   absl::StatusOr<v1::NsaSelectedAttentionRequest> req =
//       MakeNsaForwardRequest(w);
#ifndef ATTNSERVE_CLIENT_ATTNCTL_NSA_REQUESTS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_NSA_REQUESTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnctl/workload.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnctl {

// INVALID_ARGUMENT naming the flag when a size is not positive. The
// operator's own rules (block size, head dims, ...) are left to the server.
absl::Status ValidateNsaWorkload(const Workload& w);

// topk_indices values, [T1, N2, K] row-major. Each token and kv head takes K
// distinct random blocks of its batch (repeats only when the batch has fewer
// than K blocks); with sparse_mode 2 they are drawn from the blocks at or
// before the token's own position first, as a real selection would be.
std::vector<int32_t> RandomTopk(const Workload& w);

// A forward request with random query/key/value in [-1, 1).
absl::StatusOr<v1::NsaSelectedAttentionRequest> MakeNsaForwardRequest(
    const Workload& w);

// The grad request for `forward` and its `result`: the same inputs and
// options, random attention_out_grad, and attention_out / softmax_max /
// softmax_sum from `result`. Consumes both arguments' tensors.
absl::StatusOr<v1::NsaSelectedAttentionGradRequest> MakeNsaGradRequest(
    const Workload& w, v1::NsaSelectedAttentionRequest forward,
    v1::NsaSelectedAttentionResponse result);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_NSA_REQUESTS_H_
