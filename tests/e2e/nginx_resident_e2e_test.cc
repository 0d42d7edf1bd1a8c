// Resident tensors behind nginx (Debian's) with the session-affinity example
// deploy/nginx/attnserve-grpc-sessions.conf in front of two attnserve
// processes: a session's handles keep working through the balancer, the
// sessions spread over both instances, and after the instance of a session
// restarts, its NOT_FOUND is recovered by resending the data. Skips, saying
// so, only when no nginx binary is installed.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/client/client.h"
#include "attnserve/client/resident.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/nginx_process.h"

namespace attnserve::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kSessionHeader[] = "x-attnserve-session";
constexpr char kInstanceHeader[] = "x-attnserve-instance";

v1::Tensor Random(uint64_t seed) {
  return MakeTensor(RandomFloats(4 * 64 * 32, seed), {1, 4, 64, 32},
                    v1::DATA_TYPE_FLOAT32)
      .value();
}

v1::FlashAttentionScoreRequest Request(const v1::Tensor& key) {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Random(1);
  *r.mutable_key() = key;
  *r.mutable_value() = Random(3);
  r.set_head_num(4);
  r.set_input_layout("BNSD");
  r.set_scale_value(0.17);
  return r;
}

// The instance that answers GetServerInfo on `channel` with `session`.
std::string InstanceOf(const std::shared_ptr<grpc::Channel>& channel,
                       const std::string& session) {
  auto stub = v1::AttentionService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  if (!session.empty()) context.AddMetadata(kSessionHeader, session);
  v1::GetServerInfoResponse info;
  const grpc::Status status =
      stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  const auto& trailing = context.GetServerTrailingMetadata();
  const auto it = trailing.find(kInstanceHeader);
  if (it == trailing.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

class NginxResidentE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nginx_ = FindNginx(kNginxBinary);
    if (nginx_.empty()) {
      GTEST_SKIP() << "nginx is not installed (apt-get install nginx); "
                      "the load-balancer test needs the real binary";
    }
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::unique_ptr<ServerProcess>> server =
          ServerProcess::Start(kAttnserveBinary,
                               {"--workers=1", "--threads_per_request=1"});
      ASSERT_TRUE(server.ok()) << server.status();
      backends_.push_back(*std::move(server));
    }
    absl::StatusOr<std::unique_ptr<NginxProcess>> lb = NginxProcess::Start(
        nginx_, kDeployDir + "/nginx/attnserve-grpc-sessions.conf",
        {backends_[0]->target(), backends_[1]->target()});
    ASSERT_TRUE(lb.ok()) << lb.status();
    lb_ = *std::move(lb);
  }

  // A client of the balancer whose every call carries `session`.
  Client SessionClient(const std::string& session) {
    ClientOptions options;
    options.metadata = {{kSessionHeader, session}};
    absl::StatusOr<Client> client = Client::Connect(lb_->target(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *client;
  }

  // The instance id of each backend, asked directly.
  std::vector<std::string> BackendInstances() {
    std::vector<std::string> ids;
    for (const auto& backend : backends_) {
      absl::StatusOr<Client> direct = Client::Connect(backend->target());
      EXPECT_TRUE(direct.ok());
      ids.push_back(InstanceOf(direct->channel(), ""));
    }
    return ids;
  }

  std::string nginx_;
  std::vector<std::unique_ptr<ServerProcess>> backends_;
  std::unique_ptr<NginxProcess> lb_;
};

TEST_F(NginxResidentE2eTest, ASessionsHandlesWorkThroughTheBalancer) {
  const std::vector<std::string> instances = BackendInstances();
  ASSERT_NE(instances[0], instances[1]);
  const v1::Tensor key = Random(2);
  absl::StatusOr<Client> direct = Client::Connect(backends_[0]->target());
  ASSERT_TRUE(direct.ok());
  absl::StatusOr<v1::FlashAttentionScoreResponse> want =
      direct->FlashAttentionScore(Request(key), absl::Seconds(30));
  ASSERT_TRUE(want.ok()) << want.status();

  std::set<std::string> used;
  for (int s = 0; s < 8; ++s) {
    const std::string session = absl::StrCat("job-", s);
    SCOPED_TRACE(session);
    const Client client = SessionClient(session);
    absl::StatusOr<v1::PutTensorResponse> put =
        client.PutTensor(key, PutOptions{}, absl::Seconds(30));
    ASSERT_TRUE(put.ok()) << put.status() << "\n" << lb_->error_log();
    const std::string instance = InstanceOf(client.channel(), session);
    used.insert(instance);
    // Every call of the session, by handle, reaches the instance that holds
    // the key and answers the same bytes as by data.
    for (int i = 0; i < 4; ++i) {
      absl::StatusOr<v1::FlashAttentionScoreResponse> got =
          client.FlashAttentionScore(Request(TensorHandle(put->handle())),
                                     absl::Seconds(30));
      ASSERT_TRUE(got.ok()) << got.status() << "\n" << lb_->error_log();
      EXPECT_TRUE(got->attention_out().data() == want->attention_out().data());
      EXPECT_EQ(got->handles().at("key"), put->handle());
    }
    EXPECT_EQ(InstanceOf(client.channel(), session), instance);
  }
  // Eight sessions over two instances: both are used (the hash of these
  // session names puts some on each; a different nginx hash would still
  // spread 8 sessions with probability 1 - 2^-7).
  EXPECT_EQ(used, std::set<std::string>(instances.begin(), instances.end()));
}

TEST_F(NginxResidentE2eTest, NotFoundAfterARestartIsRecoveredByResending) {
  const std::string session = "job-restart";
  const Client client = SessionClient(session);
  const v1::Tensor key = Random(2);
  absl::StatusOr<v1::PutTensorResponse> put =
      client.PutTensor(key, PutOptions{}, absl::Seconds(30));
  ASSERT_TRUE(put.ok()) << put.status() << "\n" << lb_->error_log();
  const v1::FlashAttentionScoreRequest by_handle =
      Request(TensorHandle(put->handle()));
  absl::StatusOr<v1::FlashAttentionScoreResponse> before =
      client.FlashAttentionScore(by_handle, absl::Seconds(30));
  ASSERT_TRUE(before.ok()) << before.status();

  // Restart the session's instance at the same address.
  const std::string instance = InstanceOf(client.channel(), session);
  const std::vector<std::string> instances = BackendInstances();
  const size_t holder = instances[0] == instance ? 0 : 1;
  ASSERT_EQ(instances[holder], instance);
  const int port = backends_[holder]->port();
  ASSERT_EQ(backends_[holder]->Stop(), 0);
  absl::StatusOr<std::unique_ptr<ServerProcess>> restarted =
      ServerProcess::StartOnPort(kAttnserveBinary, port,
                                 {"--workers=1", "--threads_per_request=1"});
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  backends_[holder] = *std::move(restarted);

  // The handle is gone wherever the call lands: NOT_FOUND naming the field.
  absl::StatusOr<v1::FlashAttentionScoreResponse> lost =
      client.FlashAttentionScore(by_handle, absl::Seconds(30));
  ASSERT_EQ(lost.status().code(), absl::StatusCode::kNotFound)
      << lost.status() << "\n"
      << lb_->error_log();
  EXPECT_THAT(lost.status().message(), HasSubstr("key.handle"));

  // The client that kept the data resends it, once, and gets the answer.
  const HandleData data = {{put->handle(), &key}};
  absl::StatusOr<v1::FlashAttentionScoreResponse> recovered =
      CallResendingOnNotFound(client, &Client::FlashAttentionScore, by_handle,
                              data, absl::Seconds(30));
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_TRUE(recovered->attention_out().data() ==
              before->attention_out().data());

  // Uploading again makes the session resident again.
  absl::StatusOr<v1::PutTensorResponse> again =
      client.PutTensor(key, PutOptions{}, absl::Seconds(30));
  ASSERT_TRUE(again.ok()) << again.status();
  absl::StatusOr<v1::FlashAttentionScoreResponse> after =
      client.FlashAttentionScore(Request(TensorHandle(again->handle())),
                                 absl::Seconds(30));
  ASSERT_TRUE(after.ok()) << after.status() << "\n" << lb_->error_log();
  EXPECT_TRUE(after->attention_out().data() == before->attention_out().data());
}

}  // namespace
}  // namespace attnserve::e2e
