// attnserve.v1.AttentionService as registered with gRPC (callback API).
//
// Every method is a call into the pipeline (rpc_pipeline.h): each compute
// RPC is served by Serve<traits> (operator_rpcs.h); GetWorkspaceSize
// prepares the nested request exactly as its RPC would (Size<traits>);
// GetServerInfo answers from the configuration; the resident tensors'
// PutTensor and GetTensor stream (tensor_rpcs.h) and DeleteTensor removes a
// stored tensor. Each passes the guard first.
//
//   core::Engine engine(core::EngineOptions{});
//   Scheduler scheduler(SchedulerOptions{.workers = 2});
//   CallGuard guard(GuardOptions{});
//   TensorStore store(TensorStoreOptions{}, &budget);
//   AttentionService service(&engine, &scheduler, &guard, &store,
//                            PipelineConfig{}, TensorRpcConfig{});
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
#include "server/tensor_rpcs.h"
#include "server/tensor_store.h"

namespace attnserve::server {

// The generated service with the small RPCs' and the resident tensors'
// streams' methods on bytes. The compute RPCs' methods are replaced by
// AttentionService itself (streams of bytes).
using AttentionServiceBase =
    v1::AttentionService::WithRawCallbackMethod_GetWorkspaceSize<
        v1::AttentionService::WithRawCallbackMethod_GetServerInfo<
            v1::AttentionService::WithRawCallbackMethod_PutTensor<
                v1::AttentionService::WithRawCallbackMethod_GetTensor<
                    v1::AttentionService::CallbackService>>>>;

class AttentionService final : public AttentionServiceBase {
 public:
  // `engine`, `scheduler`, `guard` and `store` must outlive the service.
  AttentionService(core::Engine* engine, Scheduler* scheduler,
                   const CallGuard* guard, TensorStore* store,
                   const PipelineConfig& config,
                   const TensorRpcConfig& tensor_config);

  // Small messages: parsed and serialized by protobuf, but here, so that
  // bytes that are not a request are INVALID_ARGUMENT (after the guard).
  grpc::ServerUnaryReactor* GetWorkspaceSize(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

  grpc::ServerReadReactor<grpc::ByteBuffer>* PutTensor(
      grpc::CallbackServerContext* context,
      grpc::ByteBuffer* response) override {
    return tensor_rpcs_.PutTensor(context, response);
  }
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetTensor(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override {
    return tensor_rpcs_.GetTensor(context, request);
  }
  grpc::ServerUnaryReactor* DeleteTensor(
      grpc::CallbackServerContext* context,
      const v1::DeleteTensorRequest* request,
      v1::DeleteTensorResponse* response) override;

  // Cancels the PutTensor and GetTensor streams in progress (a drain that
  // ran out of time): uploads free what they received.
  void CancelStreams() { tensor_rpcs_.CancelStreams(); }

 private:
  // The two RPCs above once their bytes were parsed. (Not overloads of the
  // RPCs: those would hide the generated base's synchronous methods.)
  grpc::ServerUnaryReactor* AnswerWorkspaceSize(
      grpc::CallbackServerContext* context,
      const v1::GetWorkspaceSizeRequest& request, const absl::Status& parsed,
      v1::GetWorkspaceSizeResponse* answer, grpc::ByteBuffer* out);
  grpc::ServerUnaryReactor* AnswerServerInfo(
      grpc::CallbackServerContext* context,
      const v1::GetServerInfoRequest& request, const absl::Status& parsed,
      v1::GetServerInfoResponse* response, grpc::ByteBuffer* out);

  // Serves every compute RPC (operator_rpcs.h) as a bidirectional stream of
  // bytes, by Serve<traits>: gRPC then hands the call over when its headers
  // arrive, not once its whole request has. The wire is the same: clients
  // call it as the unary RPC it is.
  void ServeComputeMethodsAsStreams();

  core::Engine* const engine_;
  Scheduler* const scheduler_;
  const CallGuard* const guard_;
  TensorStore* const store_;
  const PipelineConfig config_;
  const RpcPipeline pipeline_;
  TensorRpcs tensor_rpcs_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_ATTENTION_SERVICE_H_
