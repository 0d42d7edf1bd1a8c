// attnserve.v1.AttentionService as registered with gRPC (callback API).
//
// Every method is a call into the pipeline (rpc_pipeline.h): each compute
// RPC is one line, Serve<traits> (operator_rpcs.h); GetWorkspaceSize
// prepares the nested request exactly as its RPC would (Size<traits>);
// GetServerInfo answers from the configuration. Each passes the guard first.
//
//   core::Engine engine(core::EngineOptions{});
//   Scheduler scheduler(SchedulerOptions{.workers = 2});
//   CallGuard guard(GuardOptions{});
//   AttentionService service(&engine, &scheduler, &guard, PipelineConfig{});
//   builder.RegisterService(&service);
#ifndef ATTNSERVE_SERVER_ATTENTION_SERVICE_H_
#define ATTNSERVE_SERVER_ATTENTION_SERVICE_H_

#include "attnserve/core/engine.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/call_guard.h"
#include "server/operator_rpcs.h"
#include "server/rpc_pipeline.h"
#include "server/scheduler.h"

namespace attnserve::server {

// One compute RPC: the generated method `Name`, served by the pipeline with
// the traits `Name##Rpc` of operator_rpcs.h.
// The method takes the request as received and gives the response as sent
// (bytes): the pipeline decodes and encodes them itself.
#define ATTN_OPERATOR_RPC(Name)                                         \
  grpc::ServerUnaryReactor* Name(grpc::CallbackServerContext* context,  \
                                 const grpc::ByteBuffer* request,       \
                                 grpc::ByteBuffer* response) override { \
    return pipeline_.Serve<Name##Rpc>(context, request, response);      \
  }

// The generated service with the compute RPCs' methods on bytes.
using AttentionServiceBase =
    v1::AttentionService::WithRawCallbackMethod_FlashAttentionScore<
        v1::AttentionService::WithRawCallbackMethod_FlashAttentionScoreGrad<
            v1::AttentionService::WithRawCallbackMethod_NsaSelectedAttention<
                v1::AttentionService::
                    WithRawCallbackMethod_NsaSelectedAttentionGrad<
                        v1::AttentionService::
                            WithRawCallbackMethod_GetWorkspaceSize<
                                v1::AttentionService::
                                    WithRawCallbackMethod_GetServerInfo<
                                        v1::AttentionService::
                                            CallbackService>>>>>>;

class AttentionService final : public AttentionServiceBase {
 public:
  // `engine`, `scheduler` and `guard` must outlive the service.
  AttentionService(core::Engine* engine, Scheduler* scheduler,
                   const CallGuard* guard, const PipelineConfig& config);

  ATTN_OPERATOR_RPC(FlashAttentionScore)
  ATTN_OPERATOR_RPC(FlashAttentionScoreGrad)
  ATTN_OPERATOR_RPC(NsaSelectedAttention)
  ATTN_OPERATOR_RPC(NsaSelectedAttentionGrad)

  // Small messages: parsed and serialized by protobuf, but here, so that
  // bytes that are not a request are INVALID_ARGUMENT (after the guard).
  grpc::ServerUnaryReactor* GetWorkspaceSize(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  grpc::ServerUnaryReactor* GetWorkspaceSize(
      grpc::CallbackServerContext* context,
      const v1::GetWorkspaceSizeRequest& request, const absl::Status& parsed,
      v1::GetWorkspaceSizeResponse* answer, grpc::ByteBuffer* out);
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const v1::GetServerInfoRequest& request, const absl::Status& parsed,
      v1::GetServerInfoResponse* response, grpc::ByteBuffer* out);

  core::Engine* const engine_;
  Scheduler* const scheduler_;
  const PipelineConfig config_;
  const RpcPipeline pipeline_;
};

#undef ATTN_OPERATOR_RPC

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_ATTENTION_SERVICE_H_
