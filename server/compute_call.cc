#include "server/compute_call.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "server/call_tracker.h"
#include "server/status_mapping.h"

namespace attnserve::server {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

bool EndedByDeadline(absl::Time deadline, absl::Time cancelled_at,
                     absl::Time now) {
  if (deadline == absl::InfiniteFuture()) return false;
  return now >= deadline || cancelled_at >= deadline - kDeadlineSlack;
}

ComputeCall* ComputeCall::Create(grpc::CallbackServerContext* context,
                                 RequestRecord record) {
  record.request_id = RequestIdOf(*context);
  return new ComputeCall(DeadlineOf(*context), std::move(record));
}

ComputeCall::ComputeCall(absl::Time deadline, RequestRecord record)
    : token_(std::make_shared<core::CancelToken>(deadline)),
      record_(std::move(record)) {}

void ComputeCall::ReadRequest(std::function<void(const grpc::ByteBuffer&)> fn) {
  on_request_ = std::move(fn);
  StartRead(&request_);
}

void ComputeCall::OnReadDone(bool ok) {
  if (!ok) {
    FinishNow(absl::CancelledError(
        "the call ended before its request message arrived"));
    return;
  }
  on_request_(request_);
}

void ComputeCall::Describe(RequestRecord record) {
  record.request_id = std::move(record_.request_id);
  record_ = std::move(record);
}

void ComputeCall::FinishNow(const absl::Status& status) {
  SetOutcome(status, &record_);
  if (status.ok()) {
    if (before_ok_finish_) before_ok_finish_();
    LogRequest(record_);
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    return;
  }
  LogRequest(record_);
  Finish(ToGrpcStatus(status));
}

double ComputeCall::SecondsSinceCancel(const absl::Status& status) const {
  if (!absl::IsCancelled(status) && !absl::IsDeadlineExceeded(status)) {
    return -1;
  }
  const int64_t cancelled_ns = cancelled_at_ns_.load();
  absl::Time from = token_->deadline();
  if (cancelled_ns != 0) {
    from = std::min(from, absl::FromUnixNanos(cancelled_ns));
  }
  const absl::Time now = absl::Now();
  if (from > now) return -1;
  return absl::ToDoubleSeconds(now - from);
}

void ComputeCall::Submit(
    Scheduler* scheduler, const JobCost& cost, absl::Duration plan_time,
    std::function<absl::Status(const core::CancelToken&)> run,
    v1::ExecutionStats* stats) {
  Job job;
  job.deadline = token_->deadline();
  job.cancel = token_;
  job.cost = cost.flops;
  job.memory_bytes = cost.memory_bytes;
  job.held_after_bytes = cost.response_bytes;
  job.hold_after = [this](MemoryReservation held) {
    response_memory_ = std::move(held);
  };
  job.run = std::move(run);
  job.done = [this, plan_time, stats](absl::Status status,
                                      const JobTiming& timing) {
    // Measured first: the worker is free from here on.
    record_.cancel_to_free_seconds = SecondsSinceCancel(status);
    stats->set_queue_seconds(absl::ToDoubleSeconds(timing.queue_time));
    stats->set_compute_seconds(
        absl::ToDoubleSeconds(plan_time + timing.run_time));
    record_.scheduled = true;
    record_.large = timing.large;
    record_.queue_seconds = stats->queue_seconds();
    record_.compute_seconds = stats->compute_seconds();
    record_.flops = stats->flops();
    // gRPC reports an expired deadline as a cancellation, by the server's
    // timer or by the client's (which fires first when the call's headers
    // were slow to arrive); log it as what it is (the client sees
    // DEADLINE_EXCEEDED either way).
    const int64_t cancelled_ns = cancelled_at_ns_.load();
    if (absl::IsCancelled(status) &&
        EndedByDeadline(token_->deadline(),
                        cancelled_ns == 0 ? absl::InfinitePast()
                                          : absl::FromUnixNanos(cancelled_ns),
                        absl::Now())) {
      status =
          absl::DeadlineExceededError("deadline passed during computation");
    }
    // Finish last: gRPC may delete this call as soon as it is finished.
    FinishNow(status);
  };
  absl::Status admitted = scheduler->Submit(std::move(job));
  if (!admitted.ok()) FinishNow(admitted);
}

void ComputeCall::OnCancel() {
  int64_t expected = 0;
  cancelled_at_ns_.compare_exchange_strong(expected,
                                           absl::ToUnixNanos(absl::Now()));
  token_->Cancel();
  cancel_handled_.store(true, std::memory_order_release);
}

void ComputeCall::OnDone() {
  // gRPC calls OnDone after OnCancel has returned; reading what OnCancel
  // wrote last makes that order visible to ThreadSanitizer, which does not
  // see gRPC's own synchronization.
  (void)cancel_handled_.load(std::memory_order_acquire);
  if (at_done_) at_done_();
  delete this;
}

}  // namespace attnserve::server
