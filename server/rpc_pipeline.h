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
// The service's compute RPCs take their requests as received bytes
// (Serve<Rpc> on grpc::ByteBuffer): the request is decoded by the wire codec
// (attnserve/wire/message_decoder.h) with its tensors' data left in the
// received bytes, after its size was checked: the tensors the kernels read
// row by row are read there, where they were received, the others copied
// once into a pooled buffer of the engine's (core::BufferPool);
// the response is encoded as slices, the outputs' sent from the buffers the
// kernel wrote (attnserve/wire/message_encoder.h). Bytes that are not a
// valid request are INVALID_ARGUMENT naming the message type, logged like
// any other refusal.
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
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/request_payloads.h"
#include "grpcpp/grpcpp.h"
#include "server/call_guard.h"
#include "server/call_tensors.h"
#include "server/compute_call.h"
#include "server/message_bytes.h"
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

  // Steps 0-5 for the compute RPC `Rpc`, whose call's headers have arrived.
  // Returns the call's reactor at once. Step 0's checks of the headers
  // (token, drain) run now, before the request is read; the request is
  // decoded when it has arrived (tensors read where they were received or
  // copied into pooled buffers), and the response is encoded with the
  // outputs sent from their buffers.
  template <typename Rpc>
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Serve(
      grpc::CallbackServerContext* context) const;

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
  // A compute call's request and response as messages, with their tensors'
  // bytes outside them when it was received and is sent as bytes.
  template <typename Rpc>
  struct Exchange {
    grpc::CallbackServerContext* context;
    const typename Rpc::Request* request;
    typename Rpc::Response* response;
    // Null when the request's tensors hold their bytes themselves.
    wire::RequestPayloads* payloads = nullptr;
    // Null when the outputs go into the response message.
    wire::OutgoingPayloads* outgoing = nullptr;
    // The request's size as received.
    uint64_t request_bytes = 0;
    // The received slices `payloads` reads; released once the run has read
    // them (null: nothing to release).
    std::vector<grpc::Slice>* received = nullptr;
  };

  // Steps 0-5 once `reactor`'s request has arrived as `bytes`.
  template <typename Rpc>
  void Received(grpc::CallbackServerContext* context, ComputeCall* reactor,
                const grpc::ByteBuffer& bytes) const;

  // Steps 0 (the request's checks) to 5 for `exchange`, whose parts live
  // until `reactor` is done.
  template <typename Rpc>
  void Run(ComputeCall* reactor, const Exchange<Rpc>& exchange,
           std::shared_ptr<void> keep_alive) const;

  // Steps 1-2.
  template <typename Rpc>
  absl::StatusOr<typename Rpc::Call> Prepare(
      const typename Rpc::Request& request, HandleResolver* handles,
      wire::RequestPayloads* payloads = nullptr) const;

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
// allocates), less `kept_bytes` that the tensor store already holds for it;
// of those, `response_bytes` (the outputs the response sends from their
// buffers) stay held until the response is sent. Saturates instead of
// overflowing.
JobCost CostOf(uint64_t request_bytes, double flops, uint64_t run_memory_bytes,
               uint64_t kept_bytes = 0, uint64_t response_bytes = 0);

// The engine's share of ExecutionStats; the call fills in the timings.
void SetRunStats(const core::RunStats& stats, v1::ExecutionStats* out);

template <typename Rpc>
absl::StatusOr<typename Rpc::Call> RpcPipeline::Prepare(
    const typename Rpc::Request& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) const {
  ATTN_ASSIGN_OR_RETURN(typename Rpc::Args args,
                        Rpc::ToArgs(request, handles, payloads));
  // Planned for the engine's tile products, so that the run accepts it.
  return Rpc::Call::Prepare(std::move(args), config_.threads,
                            engine_->bf16_tile_products());
}

template <typename Rpc>
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* RpcPipeline::Serve(
    grpc::CallbackServerContext* context) const {
  RequestRecord record;
  record.op = Rpc::kName;
  ComputeCall* reactor = ComputeCall::Create(context, std::move(record));
  if (absl::Status admitted = guard_->AdmitHeaders(*context, Rpc::kName);
      !admitted.ok()) {
    reactor->FinishNow(admitted);
    return reactor;
  }
  reactor->ReadRequest([this, context, reactor](const grpc::ByteBuffer& bytes) {
    Received<Rpc>(context, reactor, bytes);
  });
  return reactor;
}

template <typename Rpc>
void RpcPipeline::Received(grpc::CallbackServerContext* context,
                           ComputeCall* reactor,
                           const grpc::ByteBuffer& bytes) const {
  // What the call holds until gRPC is done with it.
  struct State {
    std::vector<grpc::Slice> received;
    typename Rpc::Request request;
    wire::RequestPayloads payloads;
    typename Rpc::Response response;
    wire::OutgoingPayloads outgoing;
  };
  auto state = std::make_shared<State>();
  const uint64_t request_bytes = bytes.Length();
  const absl::Status decoded =
      DecodeRequest(bytes, &engine_->buffer_pool(), &state->received,
                    &state->request, &state->payloads);
  // `state->received` holds the received slices from here on.
  reactor->ReleaseRequest();
  reactor->Describe(RecordOf(Rpc::kName, state->request));
  if (!decoded.ok()) {
    reactor->FinishNow(decoded);
    return;
  }
  grpc::ByteBuffer* response = reactor->response();
  reactor->BeforeOkFinish([state, response] {
    *response = EncodeResponse(state->response, state->outgoing);
  });
  Exchange<Rpc> exchange{context, &state->request, &state->response,
                         &state->payloads, &state->outgoing};
  exchange.request_bytes = request_bytes;
  exchange.received = &state->received;
  // The reactor, and `state` with it, may be gone once the job was
  // submitted: nothing after this touches them.
  Run<Rpc>(reactor, exchange, state);
}

template <typename Rpc>
void RpcPipeline::Run(ComputeCall* reactor, const Exchange<Rpc>& exchange,
                      std::shared_ptr<void> keep_alive) const {
  using Call = typename Rpc::Call;
  const absl::Time start = absl::Now();
  grpc::CallbackServerContext& context = *exchange.context;
  const typename Rpc::Request& request = *exchange.request;
  // Shared by the job's closure and the reactor, which holds it (and
  // `keep_alive`) until gRPC is done with the call: the outputs being sent
  // and the stored tensors they share stay held until then.
  std::shared_ptr<CallTensors> tensors;
  absl::StatusOr<Call> prepared = [&]() -> absl::StatusOr<Call> {
    ATTN_RETURN_IF_ERROR(guard_->AdmitRequest(request));
    tensors = std::make_shared<CallTensors>(store_, guard_->Owner(context),
                                            request.retention());
    tensors->SetPayloads(exchange.payloads, exchange.outgoing);
    ATTN_RETURN_IF_ERROR(tensors->CheckRetention());
    ATTN_ASSIGN_OR_RETURN(
        Call call, Prepare<Rpc>(request, tensors.get(), exchange.payloads));
    ATTN_RETURN_IF_ERROR(CheckResponseSize(
        tensors->outputs_by_handle() ? 0 : call.output_bytes()));
    ATTN_RETURN_IF_ERROR(tensors->ReserveKept(request, call.output_bytes()));
    return call;
  }();
  reactor->AtDone([keep_alive, tensors] {});
  if (!prepared.ok()) {
    reactor->FinishNow(prepared.status());
    return;
  }
  // Shared by the job's closure, which the scheduler may copy.
  auto call = std::make_shared<const Call>(*std::move(prepared));
  // Outputs kept or sent by handle are the tensor store's to charge.
  const JobCost cost =
      CostOf(exchange.request_bytes, call->flops(), call->memory_bytes(),
             tensors->kept_bytes(),
             tensors->outputs_stored() ? 0 : call->output_bytes());
  core::Engine* engine = engine_;
  const typename Rpc::Request* request_ptr = exchange.request;
  typename Rpc::Response* response = exchange.response;
  wire::RequestPayloads* payloads = exchange.payloads;
  std::vector<grpc::Slice>* received = exchange.received;
  auto run = [engine, call, tensors, request_ptr, response, payloads, received,
              keep_alive](const core::CancelToken& token) -> absl::Status {
    absl::StatusOr<typename Rpc::Result> result = engine->Run(*call, token);
    if (result.ok()) {
      SetRunStats(result->stats, response->mutable_stats());
      Rpc::Respond(*std::move(result), response, *tensors);
      tensors->KeepInputs(*request_ptr);
      tensors->FillHandles(response->mutable_handles());
    }
    // The kernels read some tensors where they were received (the rest
    // was copied out while the call was prepared, and kept inputs before
    // it ran): the received bytes go back to gRPC now, not when the
    // response has been sent.
    if (payloads != nullptr) payloads->ReleaseReceived();
    if (received != nullptr) received->clear();
    return result.status();
  };
  reactor->Submit(scheduler_, cost, absl::Now() - start, std::move(run),
                  response->mutable_stats());
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
