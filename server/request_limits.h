// Size limits every request is held to before any handler looks at it.
//
//   absl::Status s = CheckTensorLimits(request, /*max_elements=*/1 << 28);
//   // INVALID_ARGUMENT "query.shape: 2^40 elements ... exceed the limit"
//
// Every attnserve.v1.Tensor in the message (found by reflection, so every
// operator and GetWorkspaceSize's nested requests are covered) must have:
// rank <= 8, dims >= 0, each dim <= max_elements, and prod(shape) <=
// max_elements, computed without overflow. Every repeated number field (the
// per-batch lists) has at most 2^21 entries (the largest batch), and every
// string (layouts, handles) at most 256 bytes. The check reads sizes first,
// and allocates nothing in proportion to them. Pure and thread-safe.
#ifndef ATTNSERVE_SERVER_REQUEST_LIMITS_H_
#define ATTNSERVE_SERVER_REQUEST_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace attnserve::server {

// OK, or INVALID_ARGUMENT naming the tensor's field path (e.g.
// "flash_attention_score.key.shape") and the rule.
absl::Status CheckTensorLimits(const google::protobuf::Message& request,
                               int64_t max_elements);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_REQUEST_LIMITS_H_
