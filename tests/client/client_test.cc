// The Client against a small in-process AttentionService on loopback: routing
// of every RPC, deadlines, metadata, message limits, health and error details.
#include "attnserve/client/client.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "attnserve/client/status_conversion.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve {
namespace {

using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

// Answers each RPC with stats.flops = a per-method number, so that tests see
// which method ran. FlashAttentionScore also: head_num 0 → INVALID_ARGUMENT
// with a BadRequest violation; head_num -1 → waits until the call is
// cancelled; otherwise echoes the query as attention_out.
class FakeAttentionService final : public v1::AttentionService::Service {
 public:
  grpc::Status FlashAttentionScore(
      grpc::ServerContext* context,
      const v1::FlashAttentionScoreRequest* request,
      v1::FlashAttentionScoreResponse* response) override {
    if (request->head_num() == 0) {
      google::rpc::BadRequest bad_request;
      auto* violation = bad_request.add_field_violations();
      violation->set_field("head_num");
      violation->set_description("must be positive, got 0");
      google::rpc::Status details;
      details.set_code(grpc::StatusCode::INVALID_ARGUMENT);
      details.add_details()->PackFrom(bad_request);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "head_num: must be positive, got 0",
                          details.SerializeAsString());
    }
    if (request->head_num() < 0) {
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (!context->IsCancelled() && absl::Now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    *response->mutable_attention_out() = request->query();
    response->mutable_stats()->set_flops(1);
    return grpc::Status::OK;
  }
  grpc::Status FlashAttentionScoreGrad(
      grpc::ServerContext*, const v1::FlashAttentionScoreGradRequest*,
      v1::FlashAttentionScoreGradResponse* response) override {
    response->mutable_stats()->set_flops(2);
    return grpc::Status::OK;
  }
  grpc::Status NsaSelectedAttention(
      grpc::ServerContext*, const v1::NsaSelectedAttentionRequest*,
      v1::NsaSelectedAttentionResponse* response) override {
    response->mutable_stats()->set_flops(3);
    return grpc::Status::OK;
  }
  grpc::Status NsaSelectedAttentionGrad(
      grpc::ServerContext*, const v1::NsaSelectedAttentionGradRequest*,
      v1::NsaSelectedAttentionGradResponse* response) override {
    response->mutable_stats()->set_flops(4);
    return grpc::Status::OK;
  }
  grpc::Status GetWorkspaceSize(
      grpc::ServerContext*, const v1::GetWorkspaceSizeRequest* request,
      v1::GetWorkspaceSizeResponse* response) override {
    response->set_workspace_bytes(static_cast<uint64_t>(request->op_case()));
    response->set_flops(5);
    return grpc::Status::OK;
  }
  // Reports the "x-attn-test" metadata as the version, and queue_depth 1 when
  // the call has no deadline.
  grpc::Status GetServerInfo(grpc::ServerContext* context,
                             const v1::GetServerInfoRequest*,
                             v1::GetServerInfoResponse* response) override {
    auto it = context->client_metadata().find("x-attn-test");
    response->set_version(
        it == context->client_metadata().end()
            ? "none"
            : std::string(it->second.data(), it->second.size()));
    response->set_queue_depth(context->deadline() ==
                              std::chrono::system_clock::time_point::max());
    return grpc::Status::OK;
  }
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.SetMaxSendMessageSize(64 << 20);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    // Bounded: an idle client channel in this process may answer the
    // graceful-shutdown handshake only seconds later.
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(500));
    }
  }

  std::string Target() const { return "127.0.0.1:" + std::to_string(port_); }

  Client Connect(ClientOptions options = {}) {
    absl::StatusOr<Client> client = Client::Connect(Target(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  FakeAttentionService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(ClientTest, EveryRpcReachesItsMethod) {
  Client client = Connect();
  v1::FlashAttentionScoreRequest fwd;
  fwd.set_head_num(1);
  EXPECT_EQ(client.FlashAttentionScore(fwd).value().stats().flops(), 1);
  EXPECT_EQ(client.FlashAttentionScoreGrad({}).value().stats().flops(), 2);
  EXPECT_EQ(client.NsaSelectedAttention({}).value().stats().flops(), 3);
  EXPECT_EQ(client.NsaSelectedAttentionGrad({}).value().stats().flops(), 4);
  v1::GetWorkspaceSizeRequest ws;
  ws.mutable_nsa_selected_attention();
  absl::StatusOr<v1::GetWorkspaceSizeResponse> size =
      client.GetWorkspaceSize(ws);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->workspace_bytes(),
            static_cast<uint64_t>(
                v1::GetWorkspaceSizeRequest::kNsaSelectedAttention));
  EXPECT_EQ(client.GetServerInfo().value().version(), "none");
}

TEST_F(ClientTest, CopiesShareTheChannel) {
  Client client = Connect();
  Client copy = client;
  EXPECT_EQ(copy.channel(), client.channel());
  EXPECT_EQ(copy.GetServerInfo().value().version(), "none");
}

TEST_F(ClientTest, SendsConfiguredMetadata) {
  ClientOptions options;
  options.metadata = {{"x-attn-test", "hello"}};
  EXPECT_EQ(Connect(options).GetServerInfo().value().version(), "hello");
}

TEST_F(ClientTest, InvalidArgumentKeepsFieldViolations) {
  v1::FlashAttentionScoreRequest request;
  request.set_head_num(0);
  absl::StatusOr<v1::FlashAttentionScoreResponse> response =
      Connect().FlashAttentionScore(request);
  EXPECT_THAT(response, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("head_num")));
  const std::vector<FieldViolation> violations =
      FieldViolations(response.status());
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].field, "head_num");
  EXPECT_EQ(violations[0].description, "must be positive, got 0");
}

TEST_F(ClientTest, PerCallTimeoutGivesDeadlineExceeded) {
  v1::FlashAttentionScoreRequest request;
  request.set_head_num(-1);
  const absl::Time start = absl::Now();
  EXPECT_THAT(Connect().FlashAttentionScore(request, absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(ClientTest, DefaultTimeoutAppliesWithoutPerCallTimeout) {
  ClientOptions options;
  options.default_timeout = absl::Milliseconds(200);
  v1::FlashAttentionScoreRequest request;
  request.set_head_num(-1);
  EXPECT_THAT(Connect(options).FlashAttentionScore(request),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_F(ClientTest, InfiniteTimeoutSendsNoDeadline) {
  Client client = Connect();
  EXPECT_EQ(
      client.GetServerInfo(absl::InfiniteDuration()).value().queue_depth(), 1);
  EXPECT_EQ(client.GetServerInfo(absl::Seconds(30)).value().queue_depth(), 0);
  EXPECT_EQ(client.GetServerInfo().value().queue_depth(), 0);
}

TEST_F(ClientTest, MessagesAboveGrpcDefaultLimitPassWithDefaultOptions) {
  // 6 MiB each way: above gRPC's 4 MiB default receive limit.
  v1::FlashAttentionScoreRequest request;
  request.set_head_num(1);
  *request.mutable_query() =
      MakeRandomTensor({3, 512, 1024}, v1::DATA_TYPE_FLOAT32, 1).value();
  absl::StatusOr<v1::FlashAttentionScoreResponse> response =
      Connect().FlashAttentionScore(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->attention_out().data(), request.query().data());
}

TEST_F(ClientTest, MaxMessageBytesLimitsWhatIsSent) {
  ClientOptions options;
  options.max_message_bytes = 1 << 20;
  v1::FlashAttentionScoreRequest request;
  request.set_head_num(1);
  *request.mutable_query() =
      MakeRandomTensor({1 << 19}, v1::DATA_TYPE_FLOAT32, 1).value();
  EXPECT_THAT(Connect(options).FlashAttentionScore(request),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(ClientTest, HealthFollowsTheServersServingStatus) {
  Client client = Connect();
  EXPECT_EQ(client.Health().value(), ServingStatus::kServing);
  EXPECT_THAT(client.Health("no.such.Service"),
              StatusIs(absl::StatusCode::kNotFound));
  server_->GetHealthCheckService()->SetServingStatus(false);
  EXPECT_EQ(client.Health().value(), ServingStatus::kNotServing);
  EXPECT_EQ(ServingStatusName(ServingStatus::kNotServing), "NOT_SERVING");
}

TEST_F(ClientTest, StoppedServerGivesUnavailable) {
  Client client = Connect();
  server_->Shutdown();
  server_->Wait();
  server_.reset();
  EXPECT_THAT(client.GetServerInfo(absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ClientConnectTest, RejectsEmptyTargetAndNonPositiveMessageSize) {
  EXPECT_THAT(Client::Connect(""), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("target")));
  ClientOptions options;
  options.max_message_bytes = 0;
  EXPECT_THAT(Client::Connect("127.0.0.1:1", options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_message_bytes")));
}

}  // namespace
}  // namespace attnserve
