// One compute RPC in flight: the gRPC reactor of the call tied to the
// scheduler job that serves it.
//
//   ComputeCall* call = ComputeCall::Create(context, record);
//   call->ReadRequest([=](const grpc::ByteBuffer& bytes) {
//     ... decode, prepare ...
//     if (!prepared.ok()) { call->FinishNow(prepared.status()); return; }
//     call->Submit(scheduler, JobCost{prepared->flops(), bytes}, plan_time,
//                  std::move(run), response->mutable_stats());
//   });
//   return call;
//
// The server's pipeline (rpc_pipeline.h) is its one user.
//
// gRPC sees a compute RPC as a stream of bytes each way (unary on the wire:
// one request, one response), so that the call exists from its headers on:
// it is counted in flight while its request is still arriving, it can be
// refused before its body is read, and a drain waits for it. The call reads
// one request message and answers with one response message or a status.
//
// The call owns the request's core::CancelToken (deadline = the RPC's
// deadline); a client cancellation cancels it, which stops the job in the
// queue or between tiles. The call finishes exactly once (on FinishNow, on
// admission failure, or when the job is done), logs one line carrying the
// call's x-request-id, and deletes itself when gRPC reports the call done.
#ifndef ATTNSERVE_SERVER_COMPUTE_CALL_H_
#define ATTNSERVE_SERVER_COMPUTE_CALL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "attnserve/core/cancel.h"
#include "attnserve/v1/attention.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/memory_budget.h"
#include "server/request_log.h"
#include "server/scheduler.h"

namespace attnserve::server {

// The call's deadline as an absl::Time (InfiniteFuture when none was set).
absl::Time DeadlineOf(const grpc::CallbackServerContext& context);

// How much earlier than the server's deadline a client whose own deadline
// expired may cancel its call. The deadline travels as a timeout, so the
// server's deadline trails the client's by the time the call's headers took
// to arrive: a millisecond on an idle loopback, tens on a loaded machine.
inline constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(250);

// Whether a call stopped at `now` ended because of its `deadline` rather
// than because its client gave up: the deadline had passed, or the client's
// cancellation (at `cancelled_at`; InfinitePast when there was none) came
// within kDeadlineSlack of it, which is the client's own deadline expiring.
// A call without a deadline (InfiniteFuture) never did.
bool EndedByDeadline(absl::Time deadline, absl::Time cancelled_at,
                     absl::Time now);

// What admitting a job costs: its FLOPs (lane and threads) and the bytes it
// holds while admitted (memory budget), of which `response_bytes` stay held
// after a successful run until gRPC is done with the call (the outputs the
// response sends from their buffers).
struct JobCost {
  double flops = 0;
  uint64_t memory_bytes = 0;
  uint64_t response_bytes = 0;
};

class ComputeCall final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // A new call for `context`; the pointer is owned by gRPC once returned
  // from the handler. Takes the request id from the call's metadata.
  static ComputeCall* Create(grpc::CallbackServerContext* context,
                             RequestRecord record);

  // Reads the request message; `fn` runs on gRPC's thread with its bytes
  // once it has arrived. A call that ends first (cancelled, or no message)
  // finishes CANCELLED without running `fn`. Call at most once, before
  // anything finishes the call.
  void ReadRequest(std::function<void(const grpc::ByteBuffer&)> fn);
  // Drops the request's bytes (once what the call needs was copied out).
  void ReleaseRequest() { request_.Clear(); }

  // What the log line says of the request (its request id is kept).
  void Describe(RequestRecord record);

  // The bytes sent when the call finishes OK (set them in BeforeOkFinish).
  grpc::ByteBuffer* response() { return &response_; }

  // Runs `fn` when gRPC is done with the call, before the request and
  // response are destroyed (e.g. to take back buffers the response borrowed).
  // Call before Submit() or FinishNow().
  void AtDone(std::function<void()> fn) { at_done_ = std::move(fn); }

  // Runs `fn` just before the call finishes OK, after the stats are written
  // (e.g. to encode the response from the message). Call before Submit().
  void BeforeOkFinish(std::function<void()> fn) {
    before_ok_finish_ = std::move(fn);
  }

  // Finishes with `status` without running anything. Call at most once, and
  // not together with Submit().
  void FinishNow(const absl::Status& status);

  // Queues `run` with `cost`. When the job is done, writes queue and compute
  // seconds into `stats` (compute = `plan_time` + time in `run`; `run` itself
  // sets workspace_bytes and flops), logs (with the job's lane) and finishes
  // with the job's status.
  // If the scheduler refuses the job (queue full, memory budget, draining),
  // finishes with its error at once. After a successful run,
  // `cost.response_bytes` stay charged to the memory budget until gRPC is
  // done with the call (a client that stops reading holds them). `stats` and
  // everything `run` touches must live until the call finishes (the request and
  // response do).
  void Submit(Scheduler* scheduler, const JobCost& cost,
              absl::Duration plan_time,
              std::function<absl::Status(const core::CancelToken&)> run,
              v1::ExecutionStats* stats);

  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  ComputeCall(absl::Time deadline, RequestRecord record);

  // Seconds from the cancellation (client or deadline) to now, or -1 when
  // `status` is not a cancellation.
  double SecondsSinceCancel(const absl::Status& status) const;

  const std::shared_ptr<core::CancelToken> token_;
  RequestRecord record_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::function<void(const grpc::ByteBuffer&)> on_request_;
  std::function<void()> at_done_;
  std::function<void()> before_ok_finish_;
  // The response's share of the job's memory, held until OnDone().
  MemoryReservation response_memory_;
  // absl::ToUnixNanos of the client's cancellation; 0 until OnCancel().
  std::atomic<int64_t> cancelled_at_ns_{0};
  // Set when OnCancel() is done with the call.
  std::atomic<bool> cancel_handled_{false};
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_COMPUTE_CALL_H_
