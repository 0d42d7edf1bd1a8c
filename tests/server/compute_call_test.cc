// How a stopped call is told apart: its deadline, or its client giving up.
#include "server/compute_call.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace attnserve::server {
namespace {

const absl::Time kDeadline = absl::FromUnixSeconds(1000);

TEST(EndedByDeadlineTest, DeadlinePassedWithoutAClientCancellation) {
  EXPECT_TRUE(EndedByDeadline(kDeadline, absl::InfinitePast(), kDeadline));
  EXPECT_TRUE(EndedByDeadline(kDeadline, absl::InfinitePast(),
                              kDeadline + absl::Milliseconds(3)));
  // Cancelled otherwise (e.g. by a drain) before the deadline.
  EXPECT_FALSE(EndedByDeadline(kDeadline, absl::InfinitePast(),
                               kDeadline - absl::Milliseconds(1)));
}

TEST(EndedByDeadlineTest, ClientCancellingJustBeforeTheServersDeadline) {
  // The client's own deadline expired first: its timeout reached the server
  // a few milliseconds after it was set.
  const absl::Time cancelled = kDeadline - absl::Milliseconds(14);
  EXPECT_TRUE(
      EndedByDeadline(kDeadline, cancelled, cancelled + absl::Milliseconds(2)));
  EXPECT_TRUE(EndedByDeadline(kDeadline, kDeadline - kDeadlineSlack,
                              kDeadline - kDeadlineSlack));
}

TEST(EndedByDeadlineTest, ClientCancellingWellBeforeTheDeadline) {
  const absl::Time cancelled =
      kDeadline - kDeadlineSlack - absl::Milliseconds(1);
  EXPECT_FALSE(
      EndedByDeadline(kDeadline, cancelled, cancelled + absl::Milliseconds(2)));
  EXPECT_FALSE(EndedByDeadline(kDeadline, kDeadline - absl::Seconds(4),
                               kDeadline - absl::Seconds(4)));
}

TEST(EndedByDeadlineTest, NoDeadlineMeansTheClientGaveUp) {
  EXPECT_FALSE(EndedByDeadline(absl::InfiniteFuture(), kDeadline, kDeadline));
  EXPECT_FALSE(EndedByDeadline(absl::InfiniteFuture(), absl::InfinitePast(),
                               absl::InfiniteFuture()));
}

}  // namespace
}  // namespace attnserve::server
