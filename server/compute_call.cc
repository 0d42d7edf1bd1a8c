#include "server/compute_call.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "server/status_mapping.h"

namespace attnserve::server {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

ComputeCall* ComputeCall::Create(grpc::CallbackServerContext* context,
                                 RequestRecord record) {
  return new ComputeCall(DeadlineOf(*context), std::move(record));
}

ComputeCall::ComputeCall(absl::Time deadline, RequestRecord record)
    : token_(std::make_shared<core::CancelToken>(deadline)),
      record_(std::move(record)) {}

void ComputeCall::FinishNow(const absl::Status& status) {
  SetOutcome(status, &record_);
  LogRequest(record_);
  Finish(ToGrpcStatus(status));
}

void ComputeCall::Submit(
    Scheduler* scheduler, absl::Duration plan_time,
    std::function<absl::Status(const core::CancelToken&)> run,
    v1::ExecutionStats* stats) {
  Job job;
  job.deadline = token_->deadline();
  job.cancel = token_;
  job.run = std::move(run);
  job.done = [this, plan_time, stats](absl::Status status,
                                      const JobTiming& timing) {
    stats->set_queue_seconds(absl::ToDoubleSeconds(timing.queue_time));
    stats->set_compute_seconds(
        absl::ToDoubleSeconds(plan_time + timing.run_time));
    record_.queue_seconds = stats->queue_seconds();
    record_.compute_seconds = stats->compute_seconds();
    record_.flops = stats->flops();
    // gRPC reports an expired deadline as a cancellation; log it as what it
    // is (the client sees DEADLINE_EXCEEDED either way).
    if (absl::IsCancelled(status) && absl::Now() >= token_->deadline()) {
      status =
          absl::DeadlineExceededError("deadline passed during computation");
    }
    // Finish last: gRPC may delete this call as soon as it is finished.
    FinishNow(status);
  };
  absl::Status admitted = scheduler->Submit(std::move(job));
  if (!admitted.ok()) FinishNow(admitted);
}

void ComputeCall::OnCancel() { token_->Cancel(); }

void ComputeCall::OnDone() { delete this; }

}  // namespace attnserve::server
