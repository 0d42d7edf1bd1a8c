// The attnserve.v1.AttentionService handlers (gRPC callback API).
//
// Each compute RPC converts its request, plans it at once on the gRPC thread
// (cheap validation: INVALID_ARGUMENT / UNIMPLEMENTED come back without
// queueing), then submits a job to the Scheduler and returns its reactor.
// A worker runs the engine, moves the outputs into the response, fills
// ExecutionStats and finishes the call. Every path finishes exactly once; a
// client cancellation or the call's deadline stops the job through its
// core::CancelToken.
//
//   core::Engine engine(core::EngineOptions{});
//   Scheduler scheduler(SchedulerOptions{.workers = 2});
//   AttentionService service(&engine, &scheduler, ServiceConfig{});
//   builder.RegisterService(&service);
#ifndef ATTNSERVE_SERVER_ATTENTION_SERVICE_H_
#define ATTNSERVE_SERVER_ATTENTION_SERVICE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/scheduler.h"

namespace attnserve::server {

struct ServiceConfig {
  // Most threads one running job may use (handed to Plan*).
  int threads_per_request = 1;
  // A job gets one thread per this many FLOPs of its plan, at least 1 and at
  // most threads_per_request; 0 = always threads_per_request. Small requests
  // then run on their worker alone and leave the helpers to large ones.
  double flops_per_thread = 0;
  // Largest message accepted or sent; a request whose outputs would exceed
  // it is refused with RESOURCE_EXHAUSTED before computing.
  uint64_t max_message_bytes = uint64_t{1} << 30;
};

class AttentionService final : public v1::AttentionService::CallbackService {
 public:
  // `engine` and `scheduler` must outlive the service.
  AttentionService(core::Engine* engine, Scheduler* scheduler,
                   const ServiceConfig& config);

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
  // RESOURCE_EXHAUSTED when the planned outputs would not fit in one message.
  absl::Status CheckResponseSize(
      const std::vector<core::OutputSpec>& outputs) const;

  // Threads for a job of `flops` (see ServiceConfig::flops_per_thread).
  int ThreadsFor(double flops) const;

  core::Engine* const engine_;
  Scheduler* const scheduler_;
  const ServiceConfig config_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_ATTENTION_SERVICE_H_
