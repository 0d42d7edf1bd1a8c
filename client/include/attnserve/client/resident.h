// Calls by handle that fall back to data: a resident tensor can be gone when
// a call names it (its time to live passed, the server restarted, a load
// balancer sent the call to another instance), and the server then answers
// NOT_FOUND naming the field. A client that still has the data can resend
// it; this does so, once, for every handle it knows the data of.
//
//   HandleData data;
//   data[key_put.handle()] = &key_tensor;   // the data behind the handle
//   request.mutable_key()->CopyFrom(TensorHandle(key_put.handle()));
//   absl::StatusOr<v1::FlashAttentionScoreResponse> response =
//       CallResendingOnNotFound(client, &Client::FlashAttentionScore,
//                               request, data);
//
// Opt-in: a plain call returns the NOT_FOUND to its caller, which may prefer
// to upload again (PutTensor) and keep calling by handle.
#ifndef ATTNSERVE_CLIENT_RESIDENT_H_
#define ATTNSERVE_CLIENT_RESIDENT_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnserve/client/client.h"
#include "attnserve/v1/attention.pb.h"
#include "google/protobuf/message.h"

namespace attnserve {

// Handle -> the tensor (dtype, shape, data) it names; the pointers are not
// owned and must stay valid while used.
using HandleData = std::map<std::string, const v1::Tensor*>;

// Replaces every Tensor field of `request` (nested messages included) whose
// handle is in `data` by that tensor's dtype, shape and data. Returns how
// many fields it replaced.
int ReplaceHandles(const HandleData& data, google::protobuf::Message* request);

// (client.*method)(request, timeout); when that is NOT_FOUND and `request`
// names a handle found in `data`, the same call again with those handles
// replaced by their data (ReplaceHandles). Any other outcome is returned as
// it is.
template <typename Request, typename Response>
absl::StatusOr<Response> CallResendingOnNotFound(
    const Client& client,
    absl::StatusOr<Response> (Client::*method)(const Request&,
                                               std::optional<absl::Duration>)
        const,
    const Request& request, const HandleData& data,
    std::optional<absl::Duration> timeout = std::nullopt) {
  absl::StatusOr<Response> response = (client.*method)(request, timeout);
  if (response.ok() || !absl::IsNotFound(response.status())) return response;
  Request by_data = request;
  if (ReplaceHandles(data, &by_data) == 0) return response;
  return (client.*method)(by_data, timeout);
}

}  // namespace attnserve

#endif  // ATTNSERVE_CLIENT_RESIDENT_H_
