// The scheduler: a bounded FIFO queue of compute jobs served by a fixed pool
// of worker threads. gRPC's threads only enqueue; all compute runs here.
//
//   Scheduler scheduler(SchedulerOptions{.workers = 4, .queue_depth = 64});
//   Job job;
//   job.deadline = absl::Now() + absl::Seconds(5);
//   job.cancel = std::make_shared<core::CancelToken>(job.deadline);
//   job.run = [](const core::CancelToken& token) { return Compute(token); };
//   job.done = [](absl::Status status, const JobTiming& timing) { Reply(); };
//   absl::Status admitted = scheduler.Submit(std::move(job));
//
// A job whose deadline has passed or whose token is cancelled by the time a
// worker takes it is not started: `done` receives DEADLINE_EXCEEDED or
// CANCELLED without `run` being called. Otherwise `done` receives what `run`
// returned. Either way `done` is called exactly once, on a worker thread.
#ifndef ATTNSERVE_SERVER_SCHEDULER_H_
#define ATTNSERVE_SERVER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attnserve/core/cancel.h"
#include "server/clock.h"

namespace attnserve::server {

// Where a job spent its time, measured with the scheduler's clock.
struct JobTiming {
  // From Submit() until a worker took the job.
  absl::Duration queue_time;
  // Time inside `run` (zero when the job was not started).
  absl::Duration run_time;
};

struct Job {
  // The job is not started once this time has passed.
  absl::Time deadline = absl::InfiniteFuture();
  // Shared with whoever may cancel the request (e.g. the gRPC reactor).
  // Required.
  std::shared_ptr<core::CancelToken> cancel;
  // The work. Runs on a worker thread; should check the token between steps.
  std::function<absl::Status(const core::CancelToken&)> run;
  // Called exactly once with the outcome. Required.
  std::function<void(absl::Status, const JobTiming&)> done;
};

struct SchedulerOptions {
  // Worker threads; must be at least 1.
  int workers = 1;
  // Jobs allowed to wait (not counting those running); must be at least 1.
  int queue_depth = 64;
};

class Scheduler {
 public:
  // Starts the worker threads. `clock` defaults to the wall clock and must
  // outlive the scheduler.
  explicit Scheduler(const SchedulerOptions& options, Clock* clock = nullptr);
  // Calls Shutdown().
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Enqueues `job`. Returns RESOURCE_EXHAUSTED when queue_depth jobs are
  // already waiting, UNAVAILABLE after Shutdown() began, INVALID_ARGUMENT when
  // the job lacks a token, run or done function. On error the job is dropped
  // and its `done` is never called. Thread-safe.
  absl::Status Submit(Job job);

  // Stops accepting jobs, lets the workers finish every job already queued
  // (each still honours its deadline and token), and joins them. Idempotent;
  // thread-safe; must not be called from a worker thread.
  void Shutdown();

  // Jobs waiting for a worker right now. Thread-safe.
  int queued() const;
  int workers() const { return static_cast<int>(threads_.size()); }
  int queue_depth() const { return queue_depth_; }

 private:
  struct Entry {
    Job job;
    absl::Time enqueued;
  };

  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();
  void RunOne(Entry entry);

  const int queue_depth_;
  Clock* const clock_;
  mutable absl::Mutex mu_;
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex join_mu_;  // Serializes Shutdown() callers.
  std::vector<std::thread> threads_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_SCHEDULER_H_
