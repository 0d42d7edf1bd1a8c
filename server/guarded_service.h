// The AttentionService as registered with gRPC: the checks every call passes
// before its handler runs, in front of the real handlers.
//
//   AttentionService handlers(&engine, &scheduler, config);
//   GuardedService guarded(&handlers, GuardOptions{&token_auth, 1 << 28});
//   builder.RegisterService(&guarded);
//   ...
//   guarded.StartDraining();  // From now on every call gets UNAVAILABLE.
//
// In order, a call is refused with:
// - UNAUTHENTICATED / PERMISSION_DENIED when token auth is on and the call's
//   bearer token is missing, unknown or not granted this RPC;
// - UNAVAILABLE once draining has started (the server is shutting down);
// - INVALID_ARGUMENT when a tensor breaks the size limits
//   (request_limits.h).
// A refused call is logged like any other (request id, op, status). Calls
// that pass go to the wrapped handlers unchanged. Thread-safe.
#ifndef ATTNSERVE_SERVER_GUARDED_SERVICE_H_
#define ATTNSERVE_SERVER_GUARDED_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/request_log.h"
#include "server/token_auth.h"

namespace attnserve::server {

struct GuardOptions {
  // Token auth for every RPC of the service; null = no auth.
  const TokenAuth* auth = nullptr;
  // Largest element count of any one tensor (and of any one dim).
  int64_t max_tensor_elements = std::numeric_limits<int64_t>::max();
};

class GuardedService final : public v1::AttentionService::CallbackService {
 public:
  // `handlers` and options.auth must outlive this service.
  GuardedService(v1::AttentionService::CallbackService* handlers,
                 const GuardOptions& options);

  // Refuses every later call with UNAVAILABLE. Idempotent; thread-safe.
  void StartDraining() { draining_ = true; }
  bool draining() const { return draining_; }

  grpc::ServerUnaryReactor* FlashAttentionScore(
      grpc::CallbackServerContext* context,
      const v1::FlashAttentionScoreRequest* request,
      v1::FlashAttentionScoreResponse* response) override;
  grpc::ServerUnaryReactor* FlashAttentionScoreGrad(
      grpc::CallbackServerContext* context,
      const v1::FlashAttentionScoreGradRequest* request,
      v1::FlashAttentionScoreGradResponse* response) override;
  grpc::ServerUnaryReactor* NsaSelectedAttention(
      grpc::CallbackServerContext* context,
      const v1::NsaSelectedAttentionRequest* request,
      v1::NsaSelectedAttentionResponse* response) override;
  grpc::ServerUnaryReactor* NsaSelectedAttentionGrad(
      grpc::CallbackServerContext* context,
      const v1::NsaSelectedAttentionGradRequest* request,
      v1::NsaSelectedAttentionGradResponse* response) override;
  grpc::ServerUnaryReactor* GetWorkspaceSize(
      grpc::CallbackServerContext* context,
      const v1::GetWorkspaceSizeRequest* request,
      v1::GetWorkspaceSizeResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const v1::GetServerInfoRequest* request,
      v1::GetServerInfoResponse* response) override;

 private:
  // OK when the call may proceed to its handler; otherwise the refusal.
  absl::Status Admit(const grpc::CallbackServerContext& context,
                     absl::string_view method,
                     const google::protobuf::Message& request) const;

  // Finishes a refused call at once and logs `record`.
  static grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context,
                                          RequestRecord record,
                                          const absl::Status& status);

  v1::AttentionService::CallbackService* const handlers_;
  const GuardOptions options_;
  std::atomic<bool> draining_{false};
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_GUARDED_SERVICE_H_
