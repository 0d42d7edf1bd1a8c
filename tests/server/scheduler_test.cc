#include "server/scheduler.h"

#include <atomic>
#include <memory>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::server::testing::FakeClock;

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

// What one job observed; filled by its callbacks.
struct Outcome {
  std::atomic<bool> ran{false};
  absl::Status status;
  JobTiming timing;
  absl::Notification done;
};

Job RecordingJob(Outcome* outcome, absl::Time deadline = absl::InfiniteFuture(),
                 absl::Status result = absl::OkStatus()) {
  Job job;
  job.deadline = deadline;
  job.cancel = std::make_shared<core::CancelToken>();
  job.run = [outcome, result](const core::CancelToken&) {
    outcome->ran = true;
    return result;
  };
  job.done = [outcome](absl::Status status, const JobTiming& timing) {
    outcome->status = std::move(status);
    outcome->timing = timing;
    outcome->done.Notify();
  };
  return job;
}

// Occupies a worker until released.
struct Gate {
  absl::Notification started;
  absl::Notification release;
  absl::Notification done;
};

Job BlockingJob(Gate* gate) {
  Job job;
  job.cancel = std::make_shared<core::CancelToken>();
  job.run = [gate](const core::CancelToken&) {
    gate->started.Notify();
    gate->release.WaitForNotification();
    return absl::OkStatus();
  };
  job.done = [gate](absl::Status, const JobTiming&) { gate->done.Notify(); };
  return job;
}

TEST(SchedulerTest, RunsEveryJobAndHandsItsStatusToDone) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/2, /*queue_depth=*/64});
  constexpr int kJobs = 20;
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (int i = 0; i < kJobs; ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    absl::Status result =
        i % 3 == 0 ? absl::InternalError("job failed") : absl::OkStatus();
    ASSERT_THAT(scheduler.Submit(RecordingJob(outcomes.back().get(),
                                              absl::InfiniteFuture(), result)),
                IsOk());
  }
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(
        outcomes[i]->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(outcomes[i]->ran);
    if (i % 3 == 0) {
      EXPECT_THAT(outcomes[i]->status, StatusIs(absl::StatusCode::kInternal,
                                                HasSubstr("job failed")));
    } else {
      EXPECT_THAT(outcomes[i]->status, IsOk());
    }
  }
  EXPECT_EQ(scheduler.workers(), 2);
}

// The job boundary: a job that throws (an allocation failing inside it)
// ends with RESOURCE_EXHAUSTED / INTERNAL, its memory is released, and the
// same worker runs the next job.
TEST(SchedulerTest, ThrowingJobEndsThatCallAndTheWorkerGoesOn) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/8});
  Outcome bad_alloc, other, after;
  Job job = RecordingJob(&bad_alloc);
  job.memory_bytes = 1000;
  job.run = [](const core::CancelToken&) -> absl::Status {
    throw std::bad_alloc();
  };
  ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
  Job job2 = RecordingJob(&other);
  job2.run = [](const core::CancelToken&) -> absl::Status {
    throw std::length_error("vector too long");
  };
  ASSERT_THAT(scheduler.Submit(std::move(job2)), IsOk());
  ASSERT_THAT(scheduler.Submit(RecordingJob(&after)), IsOk());
  for (Outcome* o : {&bad_alloc, &other, &after}) {
    ASSERT_TRUE(o->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  EXPECT_THAT(bad_alloc.status, StatusIs(absl::StatusCode::kResourceExhausted,
                                         HasSubstr("out of memory")));
  EXPECT_THAT(other.status, StatusIs(absl::StatusCode::kInternal,
                                     HasSubstr("vector too long")));
  EXPECT_TRUE(after.ran);
  EXPECT_THAT(after.status, IsOk());
  scheduler.Shutdown();
  EXPECT_EQ(scheduler.memory_in_use(), 0u);
}

TEST(SchedulerTest, RunsQueuedJobsInFifoOrder) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/8});
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();

  absl::Mutex mu;
  std::vector<int> order;
  absl::BlockingCounter finished(5);
  for (int i = 0; i < 5; ++i) {
    Job job;
    job.cancel = std::make_shared<core::CancelToken>();
    job.run = [&, i](const core::CancelToken&) {
      absl::MutexLock lock(&mu);
      order.push_back(i);
      return absl::OkStatus();
    };
    job.done = [&](absl::Status, const JobTiming&) {
      finished.DecrementCount();
    };
    ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
  }
  gate.release.Notify();
  finished.Wait();
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2, 3, 4));
}

TEST(SchedulerTest, QueueFullIsResourceExhaustedAndTheJobIsDropped) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/2});
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();

  Outcome first, second, refused;
  ASSERT_THAT(scheduler.Submit(RecordingJob(&first)), IsOk());
  ASSERT_THAT(scheduler.Submit(RecordingJob(&second)), IsOk());
  EXPECT_EQ(scheduler.queued(), 2);
  EXPECT_THAT(scheduler.Submit(RecordingJob(&refused)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("queue full: 2 requests waiting "
                                 "(--queue_depth=2)")));

  gate.release.Notify();
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(second.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  scheduler.Shutdown();
  EXPECT_FALSE(refused.ran);
  EXPECT_FALSE(refused.done.HasBeenNotified());
}

TEST(SchedulerTest, JobWhoseDeadlinePassedInTheQueueIsNotStarted) {
  FakeClock clock;
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4},
                      &clock);
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();

  Outcome late;
  ASSERT_THAT(
      scheduler.Submit(RecordingJob(&late, clock.Now() + absl::Seconds(1))),
      IsOk());
  clock.Advance(absl::Seconds(2));
  gate.release.Notify();

  ASSERT_TRUE(late.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(late.ran);
  EXPECT_THAT(late.status, StatusIs(absl::StatusCode::kDeadlineExceeded,
                                    HasSubstr("in the queue")));
  EXPECT_EQ(late.timing.queue_time, absl::Seconds(2));
  EXPECT_EQ(late.timing.run_time, absl::ZeroDuration());
}

TEST(SchedulerTest, JobWithinItsDeadlineRuns) {
  FakeClock clock;
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4},
                      &clock);
  Outcome in_time;
  ASSERT_THAT(
      scheduler.Submit(RecordingJob(&in_time, clock.Now() + absl::Seconds(1))),
      IsOk());
  ASSERT_TRUE(in_time.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(in_time.ran);
  EXPECT_THAT(in_time.status, IsOk());
}

TEST(SchedulerTest, JobCancelledBeforeItStartsIsNotRun) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4});
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();

  Outcome cancelled;
  Job job = RecordingJob(&cancelled);
  std::shared_ptr<core::CancelToken> token = job.cancel;
  ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
  token->Cancel();
  gate.release.Notify();

  ASSERT_TRUE(cancelled.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(cancelled.ran);
  EXPECT_THAT(cancelled.status, StatusIs(absl::StatusCode::kCancelled,
                                         HasSubstr("before it started")));
}

TEST(SchedulerTest, RunningJobSeesCancellationThroughItsToken) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4});
  absl::Notification running;
  Outcome outcome;
  Job job = RecordingJob(&outcome);
  std::shared_ptr<core::CancelToken> token = job.cancel;
  job.run = [&](const core::CancelToken& t) {
    running.Notify();
    while (t.Check().ok()) absl::SleepFor(absl::Milliseconds(1));
    return t.Check();
  };
  ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
  running.WaitForNotification();
  token->Cancel();
  ASSERT_TRUE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(outcome.status,
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
}

TEST(SchedulerTest, RecordsQueueTimeAndRunTimeWithItsClock) {
  FakeClock clock;
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4},
                      &clock);
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();

  Outcome outcome;
  Job job = RecordingJob(&outcome);
  job.run = [&](const core::CancelToken&) {
    clock.Advance(absl::Milliseconds(300));
    return absl::OkStatus();
  };
  ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
  clock.Advance(absl::Seconds(5));
  gate.release.Notify();

  ASSERT_TRUE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(outcome.timing.queue_time, absl::Seconds(5));
  EXPECT_EQ(outcome.timing.run_time, absl::Milliseconds(300));
}

TEST(SchedulerTest, ShutdownFinishesQueuedJobsAndRefusesNewOnes) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4});
  Gate gate;
  ASSERT_THAT(scheduler.Submit(BlockingJob(&gate)), IsOk());
  gate.started.WaitForNotification();
  Outcome queued1, queued2;
  ASSERT_THAT(scheduler.Submit(RecordingJob(&queued1)), IsOk());
  ASSERT_THAT(scheduler.Submit(RecordingJob(&queued2)), IsOk());

  std::thread stopper([&] { scheduler.Shutdown(); });
  // Once shutdown has begun, new work is refused. Jobs that slipped in before
  // it began are kept and must run like the others.
  std::vector<std::unique_ptr<Outcome>> early;
  absl::Status status;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (absl::Now() < give_up) {
    auto outcome = std::make_unique<Outcome>();
    status = scheduler.Submit(RecordingJob(outcome.get()));
    if (status.code() == absl::StatusCode::kUnavailable) break;
    if (status.ok()) early.push_back(std::move(outcome));
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("draining")));
  gate.release.Notify();
  stopper.join();

  for (const auto& outcome : early) EXPECT_TRUE(outcome->ran);
  EXPECT_TRUE(gate.done.HasBeenNotified());
  EXPECT_TRUE(queued1.done.HasBeenNotified());
  EXPECT_TRUE(queued2.done.HasBeenNotified());
  EXPECT_TRUE(queued1.ran);
  EXPECT_TRUE(queued2.ran);
}

TEST(SchedulerTest, RejectsJobWithoutTokenOrCallbacks) {
  Scheduler scheduler(SchedulerOptions{/*workers=*/1, /*queue_depth=*/4});
  Outcome outcome;
  Job no_token = RecordingJob(&outcome);
  no_token.cancel = nullptr;
  EXPECT_THAT(scheduler.Submit(std::move(no_token)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token")));
  Job no_done = RecordingJob(&outcome);
  no_done.done = nullptr;
  EXPECT_THAT(scheduler.Submit(std::move(no_done)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("done")));
}

}  // namespace
}  // namespace attnserve::server
