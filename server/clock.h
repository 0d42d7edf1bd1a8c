// A source of the current time, injectable so that tests can control it.
//
// Production code uses Clock::Real(); a test hands the scheduler its own
// implementation and advances time by hand:
//
//   class FakeClock : public Clock { ... absl::Time Now() const override; };
//   Scheduler scheduler(options, &fake_clock);
#ifndef ATTNSERVE_SERVER_CLOCK_H_
#define ATTNSERVE_SERVER_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace attnserve::server {

class Clock {
 public:
  virtual ~Clock() = default;

  // The current time. Implementations must be thread-safe.
  virtual absl::Time Now() const = 0;

  // The wall clock (absl::Now()). Never null; lives for the whole program.
  static Clock* Real();
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_CLOCK_H_
