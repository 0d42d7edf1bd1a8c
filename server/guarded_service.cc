#include "server/guarded_service.h"

#include <string>
#include <utility>

#include "server/call_tracker.h"
#include "server/request_limits.h"
#include "server/status_mapping.h"

namespace attnserve::server {
namespace {

// The log record of a request refused before its handler.
template <typename Request>
RequestRecord Describe(const char* op, const Request& request) {
  return RecordOf(op, request);
}
RequestRecord Describe(const char* op, const v1::GetWorkspaceSizeRequest&) {
  RequestRecord record;
  record.op = std::string(op);
  return record;
}
RequestRecord Describe(const char* op, const v1::GetServerInfoRequest&) {
  RequestRecord record;
  record.op = std::string(op);
  return record;
}

}  // namespace

// Runs the checks, then the wrapped handler named `Method`.
#define ATTN_GUARDED_CALL(Method)                                  \
  if (absl::Status admitted = Admit(*context, #Method, *request);  \
      !admitted.ok()) {                                            \
    return Refuse(context, Describe(#Method, *request), admitted); \
  }                                                                \
  return handlers_->Method(context, request, response)

GuardedService::GuardedService(v1::AttentionService::CallbackService* handlers,
                               const GuardOptions& options)
    : handlers_(handlers), options_(options) {}

absl::Status GuardedService::Admit(
    const grpc::CallbackServerContext& context, absl::string_view method,
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

grpc::ServerUnaryReactor* GuardedService::Refuse(
    grpc::CallbackServerContext* context, RequestRecord record,
    const absl::Status& status) {
  record.request_id = RequestIdOf(*context);
  SetOutcome(status, &record);
  LogRequest(record);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* GuardedService::FlashAttentionScore(
    grpc::CallbackServerContext* context,
    const v1::FlashAttentionScoreRequest* request,
    v1::FlashAttentionScoreResponse* response) {
  ATTN_GUARDED_CALL(FlashAttentionScore);
}

grpc::ServerUnaryReactor* GuardedService::FlashAttentionScoreGrad(
    grpc::CallbackServerContext* context,
    const v1::FlashAttentionScoreGradRequest* request,
    v1::FlashAttentionScoreGradResponse* response) {
  ATTN_GUARDED_CALL(FlashAttentionScoreGrad);
}

grpc::ServerUnaryReactor* GuardedService::NsaSelectedAttention(
    grpc::CallbackServerContext* context,
    const v1::NsaSelectedAttentionRequest* request,
    v1::NsaSelectedAttentionResponse* response) {
  ATTN_GUARDED_CALL(NsaSelectedAttention);
}

grpc::ServerUnaryReactor* GuardedService::NsaSelectedAttentionGrad(
    grpc::CallbackServerContext* context,
    const v1::NsaSelectedAttentionGradRequest* request,
    v1::NsaSelectedAttentionGradResponse* response) {
  ATTN_GUARDED_CALL(NsaSelectedAttentionGrad);
}

grpc::ServerUnaryReactor* GuardedService::GetWorkspaceSize(
    grpc::CallbackServerContext* context,
    const v1::GetWorkspaceSizeRequest* request,
    v1::GetWorkspaceSizeResponse* response) {
  ATTN_GUARDED_CALL(GetWorkspaceSize);
}

grpc::ServerUnaryReactor* GuardedService::GetServerInfo(
    grpc::CallbackServerContext* context,
    const v1::GetServerInfoRequest* request,
    v1::GetServerInfoResponse* response) {
  ATTN_GUARDED_CALL(GetServerInfo);
}

#undef ATTN_GUARDED_CALL

}  // namespace attnserve::server
