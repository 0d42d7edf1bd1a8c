// The one path every call of the AttentionService takes:
//
//   0. guard     auth, drain, tensor limits (call_guard.h)
//   1. convert   proto -> the operator's core arguments (views, no copy);
//                tensors sent by handle resolve to the stored bytes
//   2. prepare   core::PreparedCall: validation, threads from the FLOPs,
//                workspace, outputs
//   3. admit     response size, then the scheduler's lanes, queue and
//                memory budget with cost = (FLOPs, request + run memory)
//   4. run       on a compute worker: Engine::Run(call)
//   5. respond   outputs moved into the response (or kept on the server, as
//                TensorRetention asks), inputs kept, `handles`,
//                ExecutionStats, one log line, Finish exactly once
//
// Resident tensors (call_tensors.h) enter at steps 1 (handles resolved),
// 3 (what the call keeps is reserved in the tensor store before admission;
// outputs returned by handle do not count against the message size) and 5.
//
// Compute RPCs take all of it (Serve<Rpc>, driven by the traits of
// operator_rpcs.h); GetWorkspaceSize runs steps 0-2 for the same traits
// (Size<Rpc>), so it reports exactly what the call would lease; the other
// RPCs run step 0 and answer at once (Answer). Admission is therefore the
// same for every operator by construction.
//
//   RpcPipeline pipeline(&engine, &scheduler, &guard, &store,
//                        PipelineConfig{...});
//   return pipeline.Serve<FlashAttentionScoreRpc>(context, request, response);
//
// Thread-safe; the engine, scheduler, guard and store must outlive the
// pipeline.
#ifndef ATTNSERVE_SERVER_RPC_PIPELINE_H_
#define ATTNSERVE_SERVER_RPC_PIPELINE_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/call_guard.h"
#include "server/call_tensors.h"
#include "server/compute_call.h"
#include "server/proto_convert.h"
#include "server/request_log.h"
#include "server/scheduler.h"
#include "server/tensor_store.h"

namespace attnserve::server {

struct PipelineConfig {
  // Threads a call is prepared for: one per flops_per_thread FLOPs, up to
  // max_threads (the engine's intra-op threads).
  core::ThreadPolicy threads;
  // Largest message sent; a call whose outputs would not fit is refused
  // with RESOURCE_EXHAUSTED before it is queued.
  uint64_t max_message_bytes = uint64_t{1} << 30;
};

class RpcPipeline {
 public:
  // `store` may be null: the server then keeps no tensors.
  RpcPipeline(core::Engine* engine, Scheduler* scheduler,
              const CallGuard* guard, TensorStore* store,
              const PipelineConfig& config)
      : engine_(engine),
        scheduler_(scheduler),
        guard_(guard),
        store_(store),
        config_(config) {}

  // Steps 0-5 for the compute RPC `Rpc`. Returns the call's reactor at once;
  // `request` and `response` live until it finishes (gRPC keeps them).
  template <typename Rpc>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context,
                                  const typename Rpc::Request* request,
                                  typename Rpc::Response* response) const;

  // Steps 1-2 for `Rpc`'s request, as Serve prepares it (tensors sent by
  // handle resolved for `context`'s caller; retention ignored): the call's
  // workspace, FLOPs and output specs into `response`.
  template <typename Rpc>
  absl::Status Size(const grpc::CallbackServerContext& context,
                    const typename Rpc::Request& request,
                    v1::GetWorkspaceSizeResponse* response) const;

  // Step 0 for `method` (the RPC's short name), then `answer()` on this
  // thread; logs `record` with the outcome and finishes the call with it.
  template <typename Fn>
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                   const char* method,
                                   const google::protobuf::Message& request,
                                   RequestRecord record, Fn answer) const;

 private:
  // Steps 1-2.
  template <typename Rpc>
  absl::StatusOr<typename Rpc::Call> Prepare(
      const typename Rpc::Request& request, HandleResolver* handles) const;

  // Step 3's own check: RESOURCE_EXHAUSTED when `output_bytes` of outputs
  // would not fit in one message.
  absl::Status CheckResponseSize(uint64_t output_bytes) const;

  // Logs `record` with `status` and finishes a default reactor with it.
  static grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                          RequestRecord record,
                                          const absl::Status& status);

  core::Engine* const engine_;
  Scheduler* const scheduler_;
  const CallGuard* const guard_;
  TensorStore* const store_;
  const PipelineConfig config_;
};

// What admitting a prepared call costs: its FLOPs (lane), and the bytes it
// holds while admitted (the request as received plus what the run
// allocates), less `kept_bytes` that the tensor store already holds for it.
// Saturates instead of overflowing.
JobCost CostOf(uint64_t request_bytes, double flops, uint64_t run_memory_bytes,
               uint64_t kept_bytes = 0);

// The engine's share of ExecutionStats; the call fills in the timings.
void SetRunStats(const core::RunStats& stats, v1::ExecutionStats* out);

template <typename Rpc>
absl::StatusOr<typename Rpc::Call> RpcPipeline::Prepare(
    const typename Rpc::Request& request, HandleResolver* handles) const {
  ATTN_ASSIGN_OR_RETURN(typename Rpc::Args args, Rpc::ToArgs(request, handles));
  // Planned for the engine's tile products, so that the run accepts it.
  return Rpc::Call::Prepare(std::move(args), config_.threads,
                            engine_->bf16_tile_products());
}

template <typename Rpc>
grpc::ServerUnaryReactor* RpcPipeline::Serve(
    grpc::CallbackServerContext* context, const typename Rpc::Request* request,
    typename Rpc::Response* response) const {
  using Call = typename Rpc::Call;
  ComputeCall* reactor =
      ComputeCall::Create(context, RecordOf(Rpc::kName, *request));
  const absl::Time start = absl::Now();
  // Shared by the job's closure and the reactor, which gives back what the
  // response borrowed once gRPC is done with it.
  std::shared_ptr<CallTensors> tensors;
  absl::StatusOr<Call> prepared = [&]() -> absl::StatusOr<Call> {
    ATTN_RETURN_IF_ERROR(guard_->Admit(*context, Rpc::kName, *request));
    tensors = std::make_shared<CallTensors>(store_, guard_->Owner(*context),
                                            request->retention());
    ATTN_RETURN_IF_ERROR(tensors->CheckRetention());
    ATTN_ASSIGN_OR_RETURN(Call call, Prepare<Rpc>(*request, tensors.get()));
    ATTN_RETURN_IF_ERROR(CheckResponseSize(
        tensors->outputs_by_handle() ? 0 : call.output_bytes()));
    ATTN_RETURN_IF_ERROR(tensors->ReserveKept(*request, call.output_bytes()));
    return call;
  }();
  if (tensors != nullptr) reactor->AtDone([tensors] { tensors->ReturnLent(); });
  if (!prepared.ok()) {
    reactor->FinishNow(prepared.status());
    return reactor;
  }
  // Shared by the job's closure, which the scheduler may copy.
  auto call = std::make_shared<const Call>(*std::move(prepared));
  const JobCost cost = CostOf(request->ByteSizeLong(), call->flops(),
                              call->memory_bytes(), tensors->kept_bytes());
  core::Engine* engine = engine_;
  // The request is gRPC's (not const itself): kept inputs move out of it
  // once the run is over.
  auto* mutable_request = const_cast<typename Rpc::Request*>(request);
  auto run = [engine, call, tensors, mutable_request,
              response](const core::CancelToken& token) -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(typename Rpc::Result result,
                          engine->Run(*call, token));
    SetRunStats(result.stats, response->mutable_stats());
    Rpc::Respond(std::move(result), response, *tensors);
    tensors->KeepInputs(mutable_request);
    tensors->FillHandles(response->mutable_handles());
    return absl::OkStatus();
  };
  reactor->Submit(scheduler_, cost, absl::Now() - start, std::move(run),
                  response->mutable_stats());
  return reactor;
}

template <typename Rpc>
absl::Status RpcPipeline::Size(const grpc::CallbackServerContext& context,
                               const typename Rpc::Request& request,
                               v1::GetWorkspaceSizeResponse* response) const {
  CallTensors tensors(store_, guard_->Owner(context), v1::TensorRetention());
  ATTN_ASSIGN_OR_RETURN(typename Rpc::Call call,
                        Prepare<Rpc>(request, &tensors));
  response->set_workspace_bytes(call.workspace_bytes());
  response->set_flops(call.flops());
  for (const core::OutputSpec& spec : call.outputs()) {
    ToProto(spec, response->add_outputs());
  }
  return absl::OkStatus();
}

template <typename Fn>
grpc::ServerUnaryReactor* RpcPipeline::Answer(
    grpc::CallbackServerContext* context, const char* method,
    const google::protobuf::Message& request, RequestRecord record,
    Fn answer) const {
  absl::Status status = guard_->Admit(*context, method, request);
  if (status.ok()) status = answer();
  return Finish(context, std::move(record), status);
}

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_RPC_PIPELINE_H_
