#include "server/metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/http_get.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::HttpGet;
using ::attnserve::test::MetricValue;
using ::testing::HasSubstr;

MetricsSources Constants() {
  MetricsSources sources;
  sources.queue_depth = [] { return 3.0; };
  sources.workspace_bytes_in_use = [] { return 4096.0; };
  return sources;
}

RequestRecord Finished(const char* op, absl::StatusCode code, double flops) {
  RequestRecord record;
  record.op = op;
  record.code = code;
  record.scheduled = true;
  record.queue_seconds = 0.002;
  record.compute_seconds = 0.03;
  record.flops = flops;
  return record;
}

TEST(MetricsTest, CountsRequestsByOperatorAndCode) {
  ServerMetrics metrics(Constants());
  metrics.OnRequest(
      Finished("FlashAttentionScore", absl::StatusCode::kOk, 1e9));
  metrics.OnRequest(
      Finished("FlashAttentionScore", absl::StatusCode::kOk, 2e9));
  metrics.OnRequest(Finished("FlashAttentionScore",
                             absl::StatusCode::kResourceExhausted, 5e9));
  const std::string text = metrics.Render();
  EXPECT_EQ(MetricValue(text,
                        "attnserve_requests_total{code=\"OK\","
                        "operator=\"FlashAttentionScore\"}"),
            2);
  EXPECT_EQ(MetricValue(text,
                        "attnserve_requests_total{code=\"RESOURCE_EXHAUSTED\","
                        "operator=\"FlashAttentionScore\"}"),
            1);
  // Only successful calls count towards FLOPs served.
  EXPECT_EQ(MetricValue(text, "attnserve_flops_total"), 3e9);
  EXPECT_EQ(MetricValue(text, "attnserve_queue_seconds_count"), 3);
  EXPECT_EQ(MetricValue(text,
                        "attnserve_compute_seconds_bucket{operator="
                        "\"FlashAttentionScore\",le=\"0.05\"}"),
            3);
  EXPECT_EQ(MetricValue(text,
                        "attnserve_compute_seconds_bucket{operator="
                        "\"FlashAttentionScore\",le=\"0.025\"}"),
            0);
}

TEST(MetricsTest, RefusedCallsHaveNoQueueOrComputeSample) {
  ServerMetrics metrics(Constants());
  RequestRecord refused;
  refused.op = "GetServerInfo";
  refused.code = absl::StatusCode::kUnauthenticated;
  metrics.OnRequest(refused);
  const std::string text = metrics.Render();
  EXPECT_EQ(MetricValue(text,
                        "attnserve_requests_total{code="
                        "\"UNAUTHENTICATED\",operator=\"GetServerInfo\"}"),
            1);
  EXPECT_EQ(MetricValue(text, "attnserve_queue_seconds_count"), -1);
}

TEST(MetricsTest, GaugesAreReadAtScrapeTime) {
  double depth = 1;
  MetricsSources sources;
  sources.queue_depth = [&depth] { return depth; };
  ServerMetrics metrics(sources);
  EXPECT_EQ(MetricValue(metrics.Render(), "attnserve_queue_depth"), 1);
  depth = 7;
  EXPECT_EQ(MetricValue(metrics.Render(), "attnserve_queue_depth"), 7);
  EXPECT_EQ(MetricValue(metrics.Render(), "attnserve_running_jobs"), 0);
  EXPECT_EQ(MetricValue(metrics.Render(), "attnserve_heap_bytes_in_use"), 0);
}

TEST(MetricsTest, CancelToFreeIsObservedWhenMeasured) {
  ServerMetrics metrics(Constants());
  RequestRecord record =
      Finished("FlashAttentionScore", absl::StatusCode::kCancelled, 0);
  record.cancel_to_free_seconds = 0.004;
  metrics.OnRequest(record);
  const std::string text = metrics.Render();
  EXPECT_EQ(MetricValue(text, "attnserve_cancel_to_free_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(MetricValue(text, "attnserve_cancel_to_free_seconds_sum"),
                   0.004);
}

TEST(MetricsEndpointTest, ServesTheMetricsOverHttp) {
  ServerMetrics metrics(Constants());
  metrics.OnRequest(Finished("GetServerInfo", absl::StatusCode::kOk, 0));
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1:0", &metrics);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_GT((*endpoint)->port(), 0);
  absl::StatusOr<test::HttpResponse> response =
      HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(MetricValue(response->body, "attnserve_workspace_bytes_in_use"),
            4096);
  EXPECT_THAT(response->body, HasSubstr("attnserve_requests_total{code=\"OK\","
                                        "operator=\"GetServerInfo\"} 1"));
}

TEST(MetricsEndpointTest, UnusableAddressIsUnavailable) {
  ServerMetrics metrics(Constants());
  EXPECT_EQ(MetricsEndpoint::Start("192.0.2.1:0", &metrics).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace attnserve::server
