// The checks every call of the AttentionService passes before any of its
// work: step 0 of the pipeline (rpc_pipeline.h), the same for every RPC.
//
//   CallGuard guard(GuardOptions{&token_auth, 1 << 28});
//   absl::Status s = guard.Admit(*context, "FlashAttentionScore", *request);
//   ...
//   guard.StartDraining();  // Calls arriving from now on get UNAVAILABLE.
//
// In order, a call is refused with:
// - UNAUTHENTICATED / PERMISSION_DENIED when token auth is on and the call's
//   bearer token is missing, unknown or not granted this RPC;
// - UNAVAILABLE once draining has started (the server is shutting down),
//   for calls whose headers arrive after that;
// - INVALID_ARGUMENT when a tensor breaks the size limits
//   (request_limits.h).
// Thread-safe.
#ifndef ATTNSERVE_SERVER_CALL_GUARD_H_
#define ATTNSERVE_SERVER_CALL_GUARD_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "server/token_auth.h"

namespace attnserve::server {

struct GuardOptions {
  // Token auth for every RPC of the service; null = no auth.
  const TokenAuth* auth = nullptr;
  // Largest element count of any one tensor (and of any one dim).
  int64_t max_tensor_elements = std::numeric_limits<int64_t>::max();
};

class CallGuard {
 public:
  // options.auth must outlive the guard.
  explicit CallGuard(const GuardOptions& options) : options_(options) {}
  CallGuard(const CallGuard&) = delete;
  CallGuard& operator=(const CallGuard&) = delete;

  // OK when the call of `method` (the RPC's short name) may proceed;
  // otherwise the refusal. The same as AdmitHeaders, then AdmitRequest.
  absl::Status Admit(const grpc::CallbackServerContext& context,
                     absl::string_view method,
                     const google::protobuf::Message& request) const;
  // The checks of the call's headers alone (token, drain): what a call
  // passes before its request is read.
  absl::Status AdmitHeaders(const grpc::CallbackServerContext& context,
                            absl::string_view method) const;
  // The checks of the request (tensor limits), for a call whose headers
  // were admitted. A call admitted on its headers before the drain began is
  // not refused for it here: it is in flight, and the drain waits for it.
  absl::Status AdmitRequest(const google::protobuf::Message& request) const;

  // Who the caller is, for what it keeps on the server (resident tensors
  // belong to their owner): with token auth on, the SHA-256 of the call's
  // bearer token; with a verified client certificate (mutual TLS), the
  // SHA-256 of that certificate; both when both apply; "" when neither (every
  // caller is the same owner). Call after Admit() succeeded. Thread-safe.
  std::string Owner(const grpc::ServerContextBase& context) const;

  // Refuses every call whose headers are checked from now on with
  // UNAVAILABLE. Idempotent; thread-safe.
  void StartDraining() { draining_ = true; }
  bool draining() const { return draining_; }

 private:
  const GuardOptions options_;
  std::atomic<bool> draining_{false};
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_CALL_GUARD_H_
