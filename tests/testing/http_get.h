// A minimal HTTP/1.0 GET over loopback TCP, for tests that scrape the
// metrics endpoint.
//
//   absl::StatusOr<HttpResponse> r = HttpGet(9464, "/metrics");
//   EXPECT_EQ(r->status, 200);
//   EXPECT_THAT(r->body, HasSubstr("attnserve_requests_total"));
#ifndef ATTNSERVE_TESTS_TESTING_HTTP_GET_H_
#define ATTNSERVE_TESTS_TESTING_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace attnserve::test {

struct HttpResponse {
  int status = 0;    // e.g. 200
  std::string body;  // Everything after the blank line.
};

// GET http://127.0.0.1:<port><path>. UNAVAILABLE when the connection fails,
// DEADLINE_EXCEEDED after `timeout`, INTERNAL for a malformed answer.
absl::StatusOr<HttpResponse> HttpGet(
    int port, const std::string& path,
    absl::Duration timeout = absl::Seconds(10));

// The value of the first sample line of `metrics` (Prometheus text format)
// whose name and labels start with `series`, e.g.
// `attnserve_requests_total{code="OK",operator="FlashAttentionScore"}`; -1
// when there is none.
double MetricValue(const std::string& metrics, const std::string& series);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_HTTP_GET_H_
