#include "server/scheduler.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace attnserve::server {

Scheduler::Scheduler(const SchedulerOptions& options, Clock* clock)
    : queue_depth_(options.queue_depth < 1 ? 1 : options.queue_depth),
      clock_(clock != nullptr ? clock : Clock::Real()) {
  const int workers = options.workers < 1 ? 1 : options.workers;
  threads_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

Scheduler::~Scheduler() { Shutdown(); }

absl::Status Scheduler::Submit(Job job) {
  if (job.cancel == nullptr || !job.run || !job.done) {
    return absl::InvalidArgumentError(
        "scheduler job needs a cancel token, a run and a done function");
  }
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("server is draining for shutdown");
  }
  if (static_cast<int>(queue_.size()) >= queue_depth_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue full: ", queue_.size(),
                     " requests waiting (--queue_depth=", queue_depth_, ")"));
  }
  queue_.push_back(Entry{std::move(job), now});
  return absl::OkStatus();
}

void Scheduler::Shutdown() {
  absl::MutexLock join_lock(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

int Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

bool Scheduler::HasWorkOrStopping() const {
  return stopping_ || !queue_.empty();
}

void Scheduler::WorkerLoop() {
  while (true) {
    Entry entry;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Scheduler::HasWorkOrStopping));
      // Drain: a stopping scheduler still serves what was queued.
      if (queue_.empty()) return;
      entry = std::move(queue_.front());
      queue_.pop_front();
    }
    RunOne(std::move(entry));
  }
}

void Scheduler::RunOne(Entry entry) {
  Job& job = entry.job;
  JobTiming timing;
  const absl::Time start = clock_->Now();
  timing.queue_time = start - entry.enqueued;
  if (job.cancel->cancelled()) {
    job.done(absl::CancelledError("request cancelled before it started"),
             timing);
    return;
  }
  if (start >= job.deadline) {
    job.done(
        absl::DeadlineExceededError(absl::StrCat(
            "deadline passed after ", absl::FormatDuration(timing.queue_time),
            " in the queue, before computation started")),
        timing);
    return;
  }
  absl::Status status = job.run(*job.cancel);
  timing.run_time = clock_->Now() - start;
  job.done(std::move(status), timing);
}

}  // namespace attnserve::server
