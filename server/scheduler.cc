#include "server/scheduler.h"

#include <algorithm>
#include <exception>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attnserve::server {
namespace {

SchedulerOptions Normalized(SchedulerOptions options) {
  options.workers = std::max(1, options.workers);
  options.queue_depth = std::max(1, options.queue_depth);
  options.max_overtakes = std::max(1, options.max_overtakes);
  if (options.large_job_workers <= 0) {
    options.large_job_workers = std::max(1, options.workers - 1);
  }
  options.large_job_workers =
      std::min(options.large_job_workers, options.workers);
  return options;
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, Clock* clock)
    : options_(Normalized(options)),
      clock_(clock != nullptr ? clock : Clock::Real()),
      own_budget_(options.budget != nullptr ? nullptr
                                            : std::make_unique<MemoryBudget>(
                                                  options.memory_budget_bytes)),
      budget_(options.budget != nullptr ? options.budget : own_budget_.get()) {
  threads_.reserve(static_cast<size_t>(options_.workers));
  for (int i = 0; i < options_.workers; ++i) {
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
  const bool small = IsSmall(job.cost);
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("server is draining for shutdown");
  }
  const size_t waiting = small_.size() + large_.size();
  if (static_cast<int>(waiting) >= options_.queue_depth) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue full: ", waiting, " requests waiting (--queue_depth=",
        options_.queue_depth, "); retry later"));
  }
  if (absl::Status fits =
          budget_->TryReserve(MemoryBudget::kRequests, job.memory_bytes);
      !fits.ok()) {
    return fits;
  }
  (small ? small_ : large_).push_back(Entry{std::move(job), now});
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

void Scheduler::CancelAll() {
  absl::MutexLock lock(&mu_);
  for (const std::deque<Entry>* lane : {&small_, &large_}) {
    for (const Entry& entry : *lane) entry.job.cancel->Cancel();
  }
  for (const std::shared_ptr<core::CancelToken>& token : running_tokens_) {
    token->Cancel();
  }
}

int Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(small_.size() + large_.size());
}

uint64_t Scheduler::memory_in_use() const {
  return budget_->used(MemoryBudget::kRequests);
}

int Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return running_small_ + running_large_;
}

bool Scheduler::LargeMayStart() const {
  return !large_.empty() && running_large_ < options_.large_job_workers;
}

bool Scheduler::CanTakeOrExit() const {
  if (!small_.empty() || LargeMayStart()) return true;
  // Drain: a stopping scheduler still serves what was queued; a worker exits
  // once nothing is left that it could take.
  return stopping_ && small_.empty() && large_.empty();
}

void Scheduler::WorkerLoop() {
  while (true) {
    Entry entry;
    bool large = false;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Scheduler::CanTakeOrExit));
      if (small_.empty() && !LargeMayStart()) return;
      large = LargeMayStart() &&
              (small_.empty() || overtakes_ >= options_.max_overtakes);
      if (large) {
        running_tokens_.push_back(large_.front().job.cancel);
        entry = std::move(large_.front());
        large_.pop_front();
        overtakes_ = 0;
        ++running_large_;
      } else {
        if (LargeMayStart()) ++overtakes_;
        running_tokens_.push_back(small_.front().job.cancel);
        entry = std::move(small_.front());
        small_.pop_front();
        ++running_small_;
      }
    }
    const uint64_t memory_bytes = entry.job.memory_bytes;
    const std::shared_ptr<core::CancelToken> token = entry.job.cancel;
    const uint64_t held_after = RunOne(std::move(entry), large);
    absl::MutexLock lock(&mu_);
    --(large ? running_large_ : running_small_);
    budget_->Release(MemoryBudget::kRequests, memory_bytes - held_after);
    running_tokens_.erase(
        std::find(running_tokens_.begin(), running_tokens_.end(), token));
  }
}

namespace {

// The job boundary: a failed allocation (std::bad_alloc from a host tensor or
// a vector) ends this call with RESOURCE_EXHAUSTED and the worker goes on
// serving; any other exception is INTERNAL for this call. Everything the job
// held is released by its destructors on the way out.
absl::Status RunJob(Job& job) {
  try {
    return job.run(*job.cancel);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "the server ran out of memory computing this request; retry later, "
        "or send a smaller request (the memory budget, "
        "--memory_budget_bytes, did not cover it)");
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("computing this request failed: ", e.what()));
  }
}

}  // namespace

uint64_t Scheduler::RunOne(Entry entry, bool large) {
  Job& job = entry.job;
  JobTiming timing;
  timing.large = large;
  const absl::Time start = clock_->Now();
  timing.queue_time = start - entry.enqueued;
  if (job.cancel->cancelled()) {
    job.done(absl::CancelledError("request cancelled before it started"),
             timing);
    return 0;
  }
  if (start >= job.deadline) {
    job.done(
        absl::DeadlineExceededError(absl::StrCat(
            "deadline passed after ", absl::FormatDuration(timing.queue_time),
            " in the queue, before computation started")),
        timing);
    return 0;
  }
  absl::Status status = RunJob(job);
  timing.run_time = clock_->Now() - start;
  uint64_t held_after = 0;
  if (status.ok() && job.hold_after) {
    held_after = std::min(job.held_after_bytes, job.memory_bytes);
    job.hold_after(
        MemoryReservation(budget_, MemoryBudget::kRequests, held_after));
  }
  job.done(std::move(status), timing);
  return held_after;
}

}  // namespace attnserve::server
