// The scheduler's admission policy: small and large lanes, bounded
// overtaking, a worker kept for small jobs, and the memory budget.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/scheduler.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr double kSmall = 1e6;
constexpr double kLarge = 1e12;

SchedulerOptions Lanes(int workers) {
  SchedulerOptions options;
  options.workers = workers;
  options.queue_depth = 16;
  options.small_job_cost = 1e9;
  return options;
}

// Records the order in which jobs start.
class StartOrder {
 public:
  Job Named(std::string name, double cost, uint64_t memory = 0) {
    Job job;
    job.cost = cost;
    job.memory_bytes = memory;
    job.cancel = std::make_shared<core::CancelToken>();
    job.run = [this, name](const core::CancelToken&) {
      absl::MutexLock lock(&mu_);
      order_.push_back(name);
      return absl::OkStatus();
    };
    job.done = [this](absl::Status, const JobTiming&) {
      absl::MutexLock lock(&mu_);
      ++done_;
    };
    return job;
  }

  // Waits until `n` jobs are done; the order they started in.
  std::vector<std::string> WaitFor(int n) {
    absl::MutexLock lock(&mu_);
    wanted_ = n;
    mu_.AwaitWithTimeout(absl::Condition(this, &StartOrder::Reached),
                         absl::Seconds(10));
    return order_;
  }

 private:
  bool Reached() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done_ >= wanted_;
  }

  absl::Mutex mu_;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  int wanted_ ABSL_GUARDED_BY(mu_) = 0;
};

// Occupies a worker until released.
struct Gate {
  absl::Notification started;
  absl::Notification release;
  absl::Notification done;

  Job Blocking(double cost, uint64_t memory = 0) {
    Job job;
    job.cost = cost;
    job.memory_bytes = memory;
    job.cancel = std::make_shared<core::CancelToken>();
    job.run = [this](const core::CancelToken&) {
      started.Notify();
      release.WaitForNotification();
      return absl::OkStatus();
    };
    job.done = [this](absl::Status, const JobTiming&) { done.Notify(); };
    return job;
  }
};

TEST(SchedulerAdmissionTest, SmallJobsStartBeforeLargeOnesQueuedEarlier) {
  Scheduler scheduler(Lanes(/*workers=*/1));
  Gate gate;
  ASSERT_THAT(scheduler.Submit(gate.Blocking(kSmall)), IsOk());
  gate.started.WaitForNotification();

  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("large", kLarge)), IsOk());
  ASSERT_THAT(scheduler.Submit(order.Named("small1", kSmall)), IsOk());
  ASSERT_THAT(scheduler.Submit(order.Named("small2", kSmall)), IsOk());
  gate.release.Notify();
  EXPECT_THAT(order.WaitFor(3), ElementsAre("small1", "small2", "large"));
}

TEST(SchedulerAdmissionTest, LargeJobIsOvertakenAtMostMaxOvertakesTimes) {
  SchedulerOptions options = Lanes(/*workers=*/1);
  options.max_overtakes = 2;
  Scheduler scheduler(options);
  Gate gate;
  ASSERT_THAT(scheduler.Submit(gate.Blocking(kSmall)), IsOk());
  gate.started.WaitForNotification();

  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("L", kLarge)), IsOk());
  for (const char* name : {"s1", "s2", "s3", "s4"}) {
    ASSERT_THAT(scheduler.Submit(order.Named(name, kSmall)), IsOk());
  }
  gate.release.Notify();
  EXPECT_THAT(order.WaitFor(5), ElementsAre("s1", "s2", "L", "s3", "s4"));
}

TEST(SchedulerAdmissionTest, OneWorkerStaysFreeForSmallJobs) {
  Scheduler scheduler(Lanes(/*workers=*/2));
  EXPECT_EQ(scheduler.large_job_workers(), 1);
  Gate big;
  ASSERT_THAT(scheduler.Submit(big.Blocking(kLarge)), IsOk());
  big.started.WaitForNotification();

  // A second large job waits although a worker is idle ...
  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("large2", kLarge)), IsOk());
  // ... which serves a small job at once.
  ASSERT_THAT(scheduler.Submit(order.Named("small", kSmall)), IsOk());
  EXPECT_THAT(order.WaitFor(1), ElementsAre("small"));
  EXPECT_EQ(scheduler.queued(), 1);

  big.release.Notify();
  EXPECT_THAT(order.WaitFor(2), ElementsAre("small", "large2"));
}

TEST(SchedulerAdmissionTest, ByDefaultEveryJobSharesOneFifoQueue) {
  SchedulerOptions options;
  options.workers = 1;
  Scheduler scheduler(options);
  EXPECT_TRUE(scheduler.IsSmall(kLarge));
  Gate gate;
  ASSERT_THAT(scheduler.Submit(gate.Blocking(kLarge)), IsOk());
  gate.started.WaitForNotification();
  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("a", kLarge)), IsOk());
  ASSERT_THAT(scheduler.Submit(order.Named("b", kSmall)), IsOk());
  gate.release.Notify();
  EXPECT_THAT(order.WaitFor(2), ElementsAre("a", "b"));
}

TEST(SchedulerAdmissionTest, QueueFullCountsBothLanes) {
  SchedulerOptions options = Lanes(/*workers=*/1);
  options.queue_depth = 2;
  Scheduler scheduler(options);
  Gate gate;
  ASSERT_THAT(scheduler.Submit(gate.Blocking(kSmall)), IsOk());
  gate.started.WaitForNotification();
  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("large", kLarge)), IsOk());
  ASSERT_THAT(scheduler.Submit(order.Named("small", kSmall)), IsOk());
  EXPECT_THAT(
      scheduler.Submit(order.Named("refused", kSmall)),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("queue full")));
  gate.release.Notify();
  EXPECT_THAT(order.WaitFor(2), ElementsAre("small", "large"));
}

TEST(SchedulerAdmissionTest, MemoryBudgetRefusesWhatDoesNotFitNow) {
  SchedulerOptions options = Lanes(/*workers=*/1);
  options.memory_budget_bytes = 100;
  Scheduler scheduler(options);
  Gate gate;
  ASSERT_THAT(scheduler.Submit(gate.Blocking(kSmall, /*memory=*/60)), IsOk());
  gate.started.WaitForNotification();
  EXPECT_EQ(scheduler.memory_in_use(), 60u);

  StartOrder order;
  EXPECT_THAT(scheduler.Submit(order.Named("over", kSmall, /*memory=*/50)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("memory budget: the request needs 50 bytes "
                                 "but 60 of 100 bytes are held")));
  EXPECT_THAT(scheduler.Submit(order.Named("huge", kSmall, /*memory=*/101)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("more than the whole budget")));
  ASSERT_THAT(scheduler.Submit(order.Named("fits", kSmall, /*memory=*/40)),
              IsOk());
  EXPECT_EQ(scheduler.memory_in_use(), 100u);

  gate.release.Notify();
  EXPECT_THAT(order.WaitFor(1), ElementsAre("fits"));
  ASSERT_TRUE(gate.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  scheduler.Shutdown();
  EXPECT_EQ(scheduler.memory_in_use(), 0u);
}

// What a successful job's outcome still holds (its response until sent)
// stays charged until the holder lets go; a failed job holds nothing.
TEST(SchedulerAdmissionTest, WhatTheOutcomeHoldsStaysChargedUntilReleased) {
  SchedulerOptions options = Lanes(/*workers=*/1);
  options.memory_budget_bytes = 100;
  Scheduler scheduler(options);
  // The worker gives back what a job held once its `done` has returned.
  auto memory_in_use_becomes = [&](uint64_t expected) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (scheduler.memory_in_use() != expected && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    return scheduler.memory_in_use();
  };
  for (const bool succeeds : {true, false}) {
    SCOPED_TRACE(succeeds);
    absl::Mutex mu;
    MemoryReservation held;
    absl::Notification done;
    Job job;
    job.cost = kSmall;
    job.memory_bytes = 70;
    job.held_after_bytes = 30;
    job.cancel = std::make_shared<core::CancelToken>();
    job.run = [succeeds](const core::CancelToken&) {
      return succeeds ? absl::OkStatus() : absl::InternalError("failed");
    };
    job.hold_after = [&](MemoryReservation r) {
      absl::MutexLock lock(&mu);
      held = std::move(r);
    };
    job.done = [&](absl::Status, const JobTiming&) { done.Notify(); };
    ASSERT_THAT(scheduler.Submit(std::move(job)), IsOk());
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(memory_in_use_becomes(succeeds ? 30 : 0), succeeds ? 30u : 0u);
    if (succeeds) {
      // 30 held: a job of 71 does not fit until the holder lets go.
      StartOrder order;
      EXPECT_THAT(scheduler.Submit(order.Named("over", kSmall, 71)),
                  StatusIs(absl::StatusCode::kResourceExhausted,
                           HasSubstr("30 of 100 bytes are held")));
      {
        absl::MutexLock lock(&mu);
        EXPECT_EQ(held.bytes(), 30u);
        held.Reset();
      }
      EXPECT_EQ(scheduler.memory_in_use(), 0u);
      ASSERT_THAT(scheduler.Submit(order.Named("fits", kSmall, 71)), IsOk());
      EXPECT_THAT(order.WaitFor(1), ElementsAre("fits"));
      EXPECT_EQ(memory_in_use_becomes(0), 0u);
    }
  }
}

TEST(SchedulerAdmissionTest, CancelAllStopsQueuedAndRunningJobs) {
  Scheduler scheduler(Lanes(/*workers=*/1));
  absl::Notification running;
  absl::Notification running_done;
  absl::Status running_status;
  Job spinning;
  spinning.cancel = std::make_shared<core::CancelToken>();
  spinning.run = [&](const core::CancelToken& token) {
    running.Notify();
    while (!token.cancelled()) absl::SleepFor(absl::Milliseconds(1));
    return token.Check();
  };
  spinning.done = [&](absl::Status status, const JobTiming&) {
    running_status = std::move(status);
    running_done.Notify();
  };
  ASSERT_THAT(scheduler.Submit(std::move(spinning)), IsOk());
  running.WaitForNotification();

  StartOrder order;
  ASSERT_THAT(scheduler.Submit(order.Named("queued", kSmall)), IsOk());
  scheduler.CancelAll();
  ASSERT_TRUE(running_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(running_status, StatusIs(absl::StatusCode::kCancelled));
  // The queued job is not started.
  EXPECT_TRUE(order.WaitFor(1).empty());
  // The worker counts itself free just after the job's `done` returns (a
  // moment that can stretch on a loaded machine): wait for it.
  for (const absl::Time give_up = absl::Now() + absl::Seconds(10);
       scheduler.running() != 0 && absl::Now() < give_up;) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(scheduler.running(), 0);
}

}  // namespace
}  // namespace attnserve::server
