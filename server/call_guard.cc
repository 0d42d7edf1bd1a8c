#include "server/call_guard.h"

#include "server/request_limits.h"

namespace attnserve::server {

absl::Status CallGuard::Admit(const grpc::CallbackServerContext& context,
                              absl::string_view method,
                              const google::protobuf::Message& request) const {
  if (options_.auth != nullptr) {
    if (absl::Status s =
            options_.auth->Check(context.client_metadata(), method);
        !s.ok()) {
      return s;
    }
  }
  if (draining_) {
    return absl::UnavailableError(
        "server is draining for shutdown; retry on another instance");
  }
  return CheckTensorLimits(request, options_.max_tensor_elements);
}

}  // namespace attnserve::server
