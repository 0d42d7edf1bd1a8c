// The scheduler: a bounded queue of compute jobs served by a fixed pool of
// worker threads. gRPC's threads only enqueue; all compute runs here.
//
//   Scheduler scheduler(SchedulerOptions{.workers = 4, .queue_depth = 64});
//   Job job;
//   job.deadline = absl::Now() + absl::Seconds(5);
//   job.cancel = std::make_shared<core::CancelToken>(job.deadline);
//   job.cost = plan.flops;
//   job.run = [](const core::CancelToken& token) { return Compute(token); };
//   job.done = [](absl::Status status, const JobTiming& timing) { Reply(); };
//   absl::Status admitted = scheduler.Submit(std::move(job));
//
// Admission and order (the policy docs/operations.md describes):
// - At most `queue_depth` jobs wait, both classes together; one more is
//   refused at once with RESOURCE_EXHAUSTED ("queue full").
// - A job whose cost (FLOPs) is at most `small_job_cost` is small, any other
//   is large. Each class is a FIFO lane.
// - A free worker takes the oldest small job first, so small requests do not
//   wait behind large ones. A large job is overtaken by at most
//   `max_overtakes` small jobs in a row, so large ones are not starved either.
// - At most `large_job_workers` workers run large jobs at once; with more
//   than one worker the default keeps one worker for small jobs, so a burst
//   of huge requests cannot occupy every worker.
// - Each job declares the memory it will hold (request, outputs, workspace);
//   jobs queued or running together hold at most `memory_budget_bytes`
//   (together with whatever else is charged to the same MemoryBudget, e.g.
//   resident tensors). One
//   more is refused at once with RESOURCE_EXHAUSTED ("memory budget").
//   What a job's outcome still holds after it ran (its response while gRPC
//   sends it) stays charged until its holder lets go (`held_after_bytes`).
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
#include "server/memory_budget.h"

namespace attnserve::server {

// Where a job spent its time, measured with the scheduler's clock.
struct JobTiming {
  // From Submit() until a worker took the job.
  absl::Duration queue_time;
  // Time inside `run` (zero when the job was not started).
  absl::Duration run_time;
  // True when the job ran in the large lane (cost above small_job_cost).
  bool large = false;
};

struct Job {
  // The job is not started once this time has passed.
  absl::Time deadline = absl::InfiniteFuture();
  // Shared with whoever may cancel the request (e.g. the gRPC reactor).
  // Required.
  std::shared_ptr<core::CancelToken> cancel;
  // What the job costs, in FLOPs (the plan's estimate); decides its lane.
  double cost = 0;
  // Bytes the job holds from admission until `done` returns.
  uint64_t memory_bytes = 0;
  // Of memory_bytes, those a successful job's outcome holds after `done`
  // returns (e.g. the response until gRPC has sent it): just before `done`
  // the scheduler hands them to `hold_after` as a reservation that gives
  // them back when destroyed (which must happen before the budget goes
  // away). When the job fails, or without `hold_after`, every byte goes
  // back once `done` returns.
  uint64_t held_after_bytes = 0;
  std::function<void(MemoryReservation)> hold_after;
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
  // Jobs costing at most this many FLOPs are small. The default makes every
  // job small: one FIFO queue.
  double small_job_cost = 1e300;
  // Workers that may run large jobs at once; 0 = workers - 1 (at least 1).
  int large_job_workers = 0;
  // Small jobs that may start in a row while a large job waits for a
  // worker it could use; at least 1.
  int max_overtakes = 8;
  // Cap on the memory_bytes of the jobs admitted at once; 0 = unlimited.
  // Ignored when `budget` is given.
  uint64_t memory_budget_bytes = 0;
  // A budget shared with other holders of memory (the tensor store): jobs
  // are charged to its kRequests account. Null = the scheduler's own budget
  // of memory_budget_bytes. Must outlive the scheduler.
  MemoryBudget* budget = nullptr;
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
  // already waiting or the job's memory does not fit in the budget now,
  // UNAVAILABLE after Shutdown() began, INVALID_ARGUMENT when the job lacks a
  // token, run or done function. On error the job is dropped and its `done`
  // is never called. Thread-safe.
  absl::Status Submit(Job job);

  // Stops accepting jobs, lets the workers finish every job already queued
  // (each still honours its deadline and token), and joins them. Idempotent;
  // thread-safe; must not be called from a worker thread.
  void Shutdown();

  // Cancels the token of every job queued or running now (they stop in the
  // queue or between tiles, as a cancelled client's would). Used when a
  // drain runs out of time. Thread-safe.
  void CancelAll();

  // Jobs waiting for a worker right now. Thread-safe.
  int queued() const;
  // Jobs running right now. Thread-safe.
  int running() const;
  // Sum of memory_bytes of the jobs admitted and not done. Thread-safe.
  uint64_t memory_in_use() const;
  uint64_t memory_budget_bytes() const { return budget_->budget_bytes(); }
  int workers() const { return static_cast<int>(threads_.size()); }
  int queue_depth() const { return options_.queue_depth; }
  int large_job_workers() const { return options_.large_job_workers; }
  // True when a job of `cost` FLOPs goes to the small lane.
  bool IsSmall(double cost) const { return cost <= options_.small_job_cost; }

 private:
  struct Entry {
    Job job;
    absl::Time enqueued;
  };

  // True when this worker can take a job now, or should exit.
  bool CanTakeOrExit() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LargeMayStart() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();
  // Returns the bytes handed to the job's `hold_after`.
  uint64_t RunOne(Entry entry, bool large);

  SchedulerOptions options_;
  Clock* const clock_;
  // options_.budget, or own_budget_.
  std::unique_ptr<MemoryBudget> own_budget_;
  MemoryBudget* const budget_;
  mutable absl::Mutex mu_;
  std::deque<Entry> small_ ABSL_GUARDED_BY(mu_);
  std::deque<Entry> large_ ABSL_GUARDED_BY(mu_);
  int running_small_ ABSL_GUARDED_BY(mu_) = 0;
  int running_large_ ABSL_GUARDED_BY(mu_) = 0;
  // Small jobs started in a row while a large one could have started.
  int overtakes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Tokens of the jobs running now (one entry per running job).
  std::vector<std::shared_ptr<core::CancelToken>> running_tokens_
      ABSL_GUARDED_BY(mu_);
  absl::Mutex join_mu_;  // Serializes Shutdown() callers.
  std::vector<std::thread> threads_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_SCHEDULER_H_
