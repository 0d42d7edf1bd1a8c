// nginx (Debian's) as a gRPC load balancer in front of two attnserve
// processes, all on loopback ports, with the deployment example
// deploy/nginx/attnserve-grpc.conf as its configuration. Skips, saying so,
// only when no nginx binary is installed.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/client/client.h"
#include "attnserve/client/status_conversion.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/nginx_process.h"
#include "tests/testing/http_get.h"

namespace attnserve::e2e {
namespace {

using ::attnserve::test::HttpGet;
using ::attnserve::test::MetricValue;

v1::FlashAttentionScoreRequest Request(uint64_t seed) {
  const std::vector<int64_t> shape = {1, 4, 64, 32};
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() =
      MakeTensor(RandomFloats(4 * 64 * 32, seed), shape, v1::DATA_TYPE_FLOAT32)
          .value();
  *r.mutable_key() = MakeTensor(RandomFloats(4 * 64 * 32, seed + 1), shape,
                                v1::DATA_TYPE_FLOAT32)
                         .value();
  *r.mutable_value() = MakeTensor(RandomFloats(4 * 64 * 32, seed + 2), shape,
                                  v1::DATA_TYPE_FLOAT32)
                           .value();
  r.set_head_num(4);
  r.set_input_layout("BNSD");
  r.set_scale_value(0.17);
  return r;
}

class NginxE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nginx_ = FindNginx(kNginxBinary);
    if (nginx_.empty()) {
      GTEST_SKIP() << "nginx is not installed (apt-get install nginx); "
                      "the load-balancer test needs the real binary";
    }
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<int> port = PickFreePort();
      ASSERT_TRUE(port.ok());
      metrics_ports_.push_back(*port);
      absl::StatusOr<std::unique_ptr<ServerProcess>> server =
          ServerProcess::Start(
              kAttnserveBinary,
              {"--workers=1", "--threads_per_request=1",
               absl::StrCat("--metrics_listen=127.0.0.1:", *port)});
      ASSERT_TRUE(server.ok()) << server.status();
      backends_.push_back(*std::move(server));
    }
    absl::StatusOr<std::unique_ptr<NginxProcess>> lb =
        NginxProcess::Start(nginx_, kDeployDir + "/nginx/attnserve-grpc.conf",
                            {backends_[0]->target(), backends_[1]->target()});
    ASSERT_TRUE(lb.ok()) << lb.status();
    lb_ = *std::move(lb);
    absl::StatusOr<Client> client = Client::Connect(lb_->target());
    ASSERT_TRUE(client.ok());
    client_ = std::make_unique<Client>(*client);
  }

  // OK forward calls a backend has served.
  double ServedBy(int i) {
    absl::StatusOr<test::HttpResponse> r =
        HttpGet(metrics_ports_[static_cast<size_t>(i)], "/metrics");
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return -1;
    return std::max(0.0, MetricValue(r->body,
                                     "attnserve_requests_total{code=\"OK\","
                                     "operator=\"FlashAttentionScore\"}"));
  }

  std::string nginx_;
  std::vector<int> metrics_ports_;
  std::vector<std::unique_ptr<ServerProcess>> backends_;
  std::unique_ptr<NginxProcess> lb_;
  std::unique_ptr<Client> client_;
};

TEST_F(NginxE2eTest, BalancesCallsOverBothInstancesWithIdenticalAnswers) {
  absl::StatusOr<Client> direct = Client::Connect(backends_[0]->target());
  ASSERT_TRUE(direct.ok());
  constexpr int kCalls = 12;
  for (int i = 0; i < kCalls; ++i) {
    const v1::FlashAttentionScoreRequest request = Request(i % 3);
    absl::StatusOr<v1::FlashAttentionScoreResponse> via_lb =
        client_->FlashAttentionScore(request, absl::Seconds(30));
    ASSERT_TRUE(via_lb.ok()) << via_lb.status() << "\n" << lb_->error_log();
    if (i < 3) {
      absl::StatusOr<v1::FlashAttentionScoreResponse> straight =
          direct->FlashAttentionScore(request, absl::Seconds(30));
      ASSERT_TRUE(straight.ok());
      EXPECT_EQ(via_lb->attention_out().data(),
                straight->attention_out().data());
    }
  }
  const double first = ServedBy(0);
  const double second = ServedBy(1);
  EXPECT_GT(second, 0) << "nginx sent nothing to the second instance";
  EXPECT_GE(first, 3.0 + 1) << "nginx sent nothing to the first instance";
  EXPECT_EQ(first + second, kCalls + 3);
}

TEST_F(NginxE2eTest, ErrorsAndTheirDetailsPassThrough) {
  v1::FlashAttentionScoreRequest request = Request(1);
  request.set_head_num(3);
  absl::StatusOr<v1::FlashAttentionScoreResponse> response =
      client_->FlashAttentionScore(request, absl::Seconds(30));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<FieldViolation> violations =
      FieldViolations(response.status());
  ASSERT_FALSE(violations.empty());
  EXPECT_EQ(violations[0].field, "head_num");
}

TEST_F(NginxE2eTest, RequestIdAndHealthGoThroughTheBalancer) {
  absl::StatusOr<ServingStatus> health = client_->Health("", absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, ServingStatus::kServing);

  auto stub = v1::AttentionService::NewStub(client_->channel());
  grpc::ClientContext context;
  context.AddMetadata("x-request-id", "through-nginx-1");
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(
      stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok());
  const auto& trailing = context.GetServerTrailingMetadata();
  ASSERT_EQ(trailing.count("x-request-id"), 1u);
  EXPECT_EQ(trailing.find("x-request-id")->second, "through-nginx-1");
}

TEST_F(NginxE2eTest, CallsMoveToTheOtherInstanceWhenOneIsGone) {
  EXPECT_EQ(backends_[1]->Stop(), 0);
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<v1::FlashAttentionScoreResponse> response =
        client_->FlashAttentionScore(Request(7), absl::Seconds(30));
    EXPECT_TRUE(response.ok()) << response.status() << "\n" << lb_->error_log();
  }
  EXPECT_EQ(ServedBy(0), 6);
}

}  // namespace
}  // namespace attnserve::e2e
