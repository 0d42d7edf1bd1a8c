// FlashAttentionScore(Grad) requests built from a Workload.
//
//   Workload w;
//   w.layout = "BSH";
//   absl::StatusOr<v1::FlashAttentionScoreRequest> req = MakeForwardRequest(w);
#ifndef ATTNSERVE_CLIENT_ATTNCTL_ATTENTION_REQUESTS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_ATTENTION_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnctl/workload.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnctl {

// INVALID_ARGUMENT naming the flag when a dimension is not positive or the
// layout is not one attnctl builds. Server-side rules (e.g. GQA
// divisibility) are left to the server.
absl::Status ValidateAttentionWorkload(const Workload& w);

// Shape of a tensor with `b` batches, `n` heads, `s` positions and head dim
// `d` in `layout` (BSH [B,S,N*D], SBH [S,B,N*D], BSND [B,S,N,D], BNSD
// [B,N,S,D]; TND [T,N,D] with T the sum of TndLengths(s, b)).
// INVALID_ARGUMENT for another layout.
absl::StatusOr<std::vector<int64_t>> LayoutShape(const std::string& layout,
                                                 int64_t b, int64_t n,
                                                 int64_t s, int64_t d);

// The sequence lengths of `batch` TND batches for `s`: batch i holds
// s - i * (s / (2 * batch)) tokens, from s down to about s / 2, so that the
// batches differ (varlen) and the longest is s.
std::vector<int64_t> TndLengths(int64_t s, int64_t batch);

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

#endif  // ATTNSERVE_CLIENT_ATTNCTL_ATTENTION_REQUESTS_H_
