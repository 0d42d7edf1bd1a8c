// A Clock (server/clock.h) whose time moves only when the test says so.
//
//   FakeClock clock;
//   options.clock = &clock;
//   clock.Advance(absl::Minutes(11));  // past a 10-minute TTL
#ifndef ATTNSERVE_TESTS_SERVER_FAKE_CLOCK_H_
#define ATTNSERVE_TESTS_SERVER_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"

namespace attnserve::server::testing {

class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000))
      : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_FAKE_CLOCK_H_
