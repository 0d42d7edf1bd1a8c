// Metrics scraped over HTTP from the real process, JSON logs, and request
// ids from the client's metadata to the log line and back.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/http_get.h"

namespace attnserve::e2e {
namespace {

using ::attnserve::test::HttpGet;
using ::attnserve::test::MetricValue;
using ::testing::HasSubstr;

class ObservabilityE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> port = PickFreePort();
    ASSERT_TRUE(port.ok());
    metrics_port_ = *port;
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(
            kAttnserveBinary,
            {"--workers=2", "--log_format=json",
             absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << server_->log();
    }
  }

  std::string Metrics() {
    absl::StatusOr<test::HttpResponse> r = HttpGet(metrics_port_, "/metrics");
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->status, 200);
    return r->body;
  }

  ProcessResult Attnctl(std::vector<std::string> args) {
    args.insert(args.begin(), kAttnctlBinary);
    args.push_back("--target=" + server_->target());
    absl::StatusOr<ProcessResult> r = RunProcess(args, kRunTimeout);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProcessResult{};
  }

  int metrics_port_ = 0;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ObservabilityE2eTest, MetricsCountCallsByOperatorAndStatus) {
  const std::string before = Metrics();
  EXPECT_THAT(before, HasSubstr("# TYPE attnserve_queue_depth gauge"));
  EXPECT_EQ(MetricValue(before, "attnserve_queue_capacity"), 64);
  EXPECT_EQ(MetricValue(before, "attnserve_in_flight_requests"), 0);

  ASSERT_EQ(
      Attnctl({"forward", "-s", "64", "-d", "32", "--repeat=3"}).exit_code, 0);
  ASSERT_EQ(Attnctl({"backward", "-s", "32", "-d", "16"}).exit_code, 0);
  ASSERT_EQ(
      Attnctl({"forward", "-s", "64", "-d", "32", "--head_num=3"}).exit_code,
      1);

  // A call is in flight until gRPC is done with it, a moment after the
  // client has its answer.
  std::string after = Metrics();
  for (const absl::Time deadline = absl::Now() + absl::Seconds(5);
       absl::Now() < deadline &&
       MetricValue(after, "attnserve_in_flight_requests") != 0;) {
    absl::SleepFor(absl::Milliseconds(10));
    after = Metrics();
  }
  // attnctl backward runs one forward for the residuals, then the grad.
  EXPECT_EQ(MetricValue(after,
                        "attnserve_requests_total{code=\"OK\","
                        "operator=\"FlashAttentionScore\"}"),
            4);
  EXPECT_EQ(MetricValue(after,
                        "attnserve_requests_total{code=\"OK\","
                        "operator=\"FlashAttentionScoreGrad\"}"),
            1);
  EXPECT_EQ(MetricValue(after,
                        "attnserve_requests_total{code=\"INVALID_ARGUMENT\","
                        "operator=\"FlashAttentionScore\"}"),
            1);
  EXPECT_EQ(MetricValue(after,
                        "attnserve_queue_seconds_count{operator="
                        "\"FlashAttentionScore\"}"),
            4);
  EXPECT_EQ(MetricValue(after,
                        "attnserve_compute_seconds_count{operator="
                        "\"FlashAttentionScoreGrad\"}"),
            1);
  // FLOPs of the forward calls: 4 * B * N * Sq * Skv * D each.
  EXPECT_EQ(MetricValue(after,
                        "attnserve_flops_total{operator="
                        "\"FlashAttentionScore\"}"),
            3 * 4.0 * 8 * 64 * 64 * 32 + 4.0 * 8 * 32 * 32 * 16);
  EXPECT_EQ(MetricValue(after, "attnserve_in_flight_requests"), 0);
  EXPECT_EQ(MetricValue(after, "attnserve_queue_depth"), 0);
  EXPECT_EQ(MetricValue(after, "attnserve_workspace_bytes_in_use"), 0);
  EXPECT_GT(MetricValue(after, "attnserve_workspace_bytes_reserved"), 0);
}

TEST_F(ObservabilityE2eTest, RequestIdTravelsFromMetadataToLogAndBack) {
  absl::StatusOr<Client> client = Client::Connect(server_->target());
  ASSERT_TRUE(client.ok());
  auto stub = v1::AttentionService::NewStub(client->channel());
  grpc::ClientContext context;
  context.AddMetadata("x-request-id", "trace-4711");
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(
      stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok());
  const auto& trailing = context.GetServerTrailingMetadata();
  ASSERT_EQ(trailing.count("x-request-id"), 1u);
  EXPECT_EQ(trailing.find("x-request-id")->second, "trace-4711");

  ASSERT_EQ(Attnctl({"forward", "-s", "16", "-d", "8",
                     "--metadata=x-request-id=job-99"})
                .exit_code,
            0);
  server_->Stop();
  // Every line is one JSON object; request lines carry the id (one line for
  // GetServerInfo, one for the forward).
  int request_lines = 0;
  bool saw_job = false;
  bool saw_trace = false;
  for (absl::string_view line : absl::StrSplit(server_->log(), '\n')) {
    if (line.empty() || line[0] == 'E' || line[0] == 'W' || line[0] == 'I') {
      continue;  // gRPC's own diagnostics, if any.
    }
    EXPECT_TRUE(absl::StartsWith(line, "{\"time\":\"") &&
                absl::EndsWith(line, "}"))
        << line;
    if (absl::StrContains(line, "\"logger\":\"request\"")) {
      ++request_lines;
      EXPECT_THAT(std::string(line), HasSubstr("\"request_id\":\""));
      saw_job = saw_job || absl::StrContains(line, "\"request_id\":\"job-99\"");
      saw_trace =
          saw_trace || absl::StrContains(line, "\"request_id\":\"trace-4711\"");
    }
  }
  EXPECT_EQ(request_lines, 2);
  EXPECT_TRUE(saw_job);
  EXPECT_TRUE(saw_trace);
}

}  // namespace
}  // namespace attnserve::e2e
