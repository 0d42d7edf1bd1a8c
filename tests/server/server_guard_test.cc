// What every call passes through before its handler, on a real in-process
// server: token auth, request ids, draining, tensor limits, memory budget.
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/server/tcp_relay.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr char kOpsToken[] = "ops-token-0123456789abcdef";
constexpr char kMonitorToken[] = "monitor-token-0123456789";

v1::FlashAttentionScoreRequest Request(int64_t seq, int64_t head_dim = 16) {
  const Bnsd dims{1, 1, seq, head_dim};
  const std::vector<double> values = RandomValues(dims.count(), 3);
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", dims, values);
  *r.mutable_key() = Pack("BNSD", dims, values);
  *r.mutable_value() = Pack("BNSD", dims, values);
  r.set_head_num(1);
  r.set_input_layout("BNSD");
  return r;
}

std::string WriteTokenFile() {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/guard_test_tokens_", getpid());
  std::ofstream out(path);
  out << kOpsToken << "\n" << kMonitorToken << " GetServerInfo\n";
  return path;
}

grpc::Status GetInfo(TestServer& server, const std::string& authorization) {
  grpc::ClientContext context;
  SetTestDeadline(&context, absl::Seconds(10));
  if (!authorization.empty())
    context.AddMetadata("authorization", authorization);
  v1::GetServerInfoResponse info;
  return server.stub().GetServerInfo(&context, v1::GetServerInfoRequest(),
                                     &info);
}

absl::StatusOr<ServingStatus> Health(TestServer& server) {
  return Client(server.channel()).Health("", absl::Seconds(10));
}

// A quick forward with a large request: 128 queries against 32768 keys and
// values of 64 fp32 (16 MiB of K and V).
v1::FlashAttentionScoreRequest LargeQuickRequest() {
  const Bnsd q{1, 1, 128, 64}, kv{1, 1, 32768, 64};
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", q, RandomValues(q.count(), 4));
  *r.mutable_key() = Pack("BNSD", kv, RandomValues(kv.count(), 5));
  *r.mutable_value() = Pack("BNSD", kv, RandomValues(kv.count(), 6));
  r.set_head_num(1);
  r.set_input_layout("BNSD");
  return r;
}

// A channel to `relay` that sends and receives messages of any size.
std::shared_ptr<grpc::Channel> RelayChannel(const TcpRelay& relay) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(relay.target(),
                                   grpc::InsecureChannelCredentials(), args);
}

// Starts `server`'s shutdown (a drain of up to 60 s) on `stopper`, which
// notifies `stopped` when it is done, and waits until health says the drain
// has begun (the thread may take a while to run on a loaded machine) or
// 30 s passed; returns the health seen last.
absl::StatusOr<ServingStatus> StartDrain(TestServer& server,
                                         std::thread* stopper,
                                         absl::Notification* stopped) {
  *stopper = std::thread([&server, stopped] {
    server.server().Shutdown(absl::Seconds(60));
    stopped->Notify();
  });
  absl::StatusOr<ServingStatus> health = Health(server);
  for (const absl::Time give_up = absl::Now() + absl::Seconds(30);
       health.ok() && *health == ServingStatus::kServing &&
       absl::Now() < give_up;
       health = Health(server)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  return health;
}

// A unary call of raw bytes to `method` (any method, registered or not).
grpc::Status GenericCall(TestServer& server, const std::string& method) {
  grpc::GenericStub stub(server.channel());
  grpc::ClientContext context;
  SetTestDeadline(&context, absl::Seconds(10));
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  grpc::Status result;
  absl::Notification done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   result = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();
  return result;
}

constexpr char kReflection[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

TEST(ServerGuardTest, TokenAuthGuardsTheServiceButNotHealth) {
  const std::string tokens = WriteTokenFile();
  ServerOptions options = TestServer::DefaultOptions();
  options.auth_token_file = tokens;
  TestServer server(options);
  ASSERT_TRUE(server.started());

  EXPECT_EQ(GetInfo(server, "").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GetInfo(server, "Bearer not-a-valid-token-at-all").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(GetInfo(server, absl::StrCat("Bearer ", kOpsToken)).ok());
  EXPECT_TRUE(GetInfo(server, absl::StrCat("Bearer ", kMonitorToken)).ok());

  grpc::ClientContext context;
  SetTestDeadline(&context);
  context.AddMetadata("authorization", absl::StrCat("Bearer ", kMonitorToken));
  v1::FlashAttentionScoreResponse response;
  const grpc::Status denied =
      server.stub().FlashAttentionScore(&context, Request(8), &response);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("FlashAttentionScore"));

  absl::StatusOr<ServingStatus> health = Health(server);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, ServingStatus::kServing);
  // Reflection is not served when tokens are required.
  EXPECT_EQ(GenericCall(server, kReflection).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  std::remove(tokens.c_str());
}

TEST(ServerGuardTest, ReflectionIsServedWithoutAuth) {
  TestServer server;
  ASSERT_TRUE(server.started());
  EXPECT_TRUE(GenericCall(server, kReflection).ok());
}

TEST(ServerGuardTest, UnreadableTokenFileFailsToStart) {
  ServerOptions options = TestServer::DefaultOptions();
  options.auth_token_file = "/nonexistent/tokens";
  Server server(options);
  const absl::Status status = server.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("/nonexistent/tokens"));
}

// The x-request-id trailing metadata of a GetServerInfo call that sent
// `sent` (nothing when empty).
std::string EchoedRequestId(TestServer& server, const std::string& sent) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  if (!sent.empty()) context.AddMetadata("x-request-id", sent);
  v1::GetServerInfoResponse info;
  EXPECT_TRUE(server.stub()
                  .GetServerInfo(&context, v1::GetServerInfoRequest(), &info)
                  .ok());
  const auto& trailing = context.GetServerTrailingMetadata();
  const auto it = trailing.find("x-request-id");
  if (it == trailing.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

TEST(ServerGuardTest, RequestIdIsEchoedOrGenerated) {
  TestServer server;
  ASSERT_TRUE(server.started());
  EXPECT_EQ(EchoedRequestId(server, "job-17.part:3"), "job-17.part:3");
  const std::string generated = EchoedRequestId(server, "");
  EXPECT_THAT(generated, MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(EchoedRequestId(server, ""), generated);
  // Not a usable id (a space): replaced by a generated one.
  EXPECT_THAT(EchoedRequestId(server, "two words"),
              MatchesRegex("[0-9a-f]{32}"));
}

TEST(ServerGuardTest, ComputeCallEchoesTheRequestIdEvenOnError) {
  TestServer server;
  ASSERT_TRUE(server.started());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  context.AddMetadata("x-request-id", "bad-request-1");
  v1::FlashAttentionScoreRequest request = Request(8);
  request.set_head_num(3);
  v1::FlashAttentionScoreResponse response;
  const grpc::Status status =
      server.stub().FlashAttentionScore(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const auto& trailing = context.GetServerTrailingMetadata();
  ASSERT_EQ(trailing.count("x-request-id"), 1u);
  EXPECT_EQ(trailing.find("x-request-id")->second, "bad-request-1");
}

TEST(ServerGuardTest, DrainRefusesNewCallsAndFinishesThoseInFlight) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 1;
  options.threads_per_request = 1;
  TestServer server(options);
  ASSERT_TRUE(server.started());

  // A call that runs for a while (about a second on one core).
  const v1::FlashAttentionScoreRequest slow = Request(6144, 64);
  grpc::ClientContext slow_context;
  SetTestDeadline(&slow_context, absl::Seconds(120));
  v1::FlashAttentionScoreResponse slow_response;
  grpc::Status slow_status;
  absl::Notification slow_done;
  server.stub().async()->FlashAttentionScore(
      &slow_context, &slow, &slow_response, [&](grpc::Status status) {
        slow_status = std::move(status);
        slow_done.Notify();
      });
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server.server().running_jobs() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.server().running_jobs(), 1);

  absl::Notification stopped;
  std::thread stopper;
  const absl::StatusOr<ServingStatus> health =
      StartDrain(server, &stopper, &stopped);
  EXPECT_TRUE(health.ok()) << health.status();
  if (!slow_done.HasBeenNotified()) {
    // While the slow call runs: NOT_SERVING, and new calls are refused.
    EXPECT_EQ(health.value_or(ServingStatus::kServing),
              ServingStatus::kNotServing);
    const grpc::Status refused = GetInfo(server, "");
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(refused.error_message(), HasSubstr("draining"));
    EXPECT_FALSE(stopped.HasBeenNotified());
  } else {
    ADD_FAILURE() << "the slow call ended before the drain could be observed";
  }
  ASSERT_TRUE(slow_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(slow_status.ok()) << slow_status.error_message();
  EXPECT_EQ(slow_response.attention_out().data().size(), 6144u * 64 * 4);
  stopper.join();
}

// A call is in flight from its headers, not from when its whole request has
// arrived: a request still uploading when the drain begins is waited for and
// answered, and the drain ends after it.
TEST(ServerGuardTest, DrainWaitsForARequestStillArriving) {
  TestServer server;
  ASSERT_TRUE(server.started());
  TcpRelay relay(server.server().port());
  auto stub = v1::AttentionService::NewStub(RelayChannel(relay));
  // The upload stops after its first MiB, until the relay releases it.
  relay.HoldFromClientAfter(1 << 20);
  const v1::FlashAttentionScoreRequest request = LargeQuickRequest();
  grpc::ClientContext context;
  SetTestDeadline(&context, absl::Seconds(120));
  v1::FlashAttentionScoreResponse response;
  grpc::Status status;
  absl::Notification done;
  stub->async()->FlashAttentionScore(&context, &request, &response,
                                     [&](grpc::Status s) {
                                       status = std::move(s);
                                       done.Notify();
                                     });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (server.server().in_flight() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.server().in_flight(), 1)
      << "a call whose request is arriving is not counted in flight";

  absl::Notification stopped;
  std::thread stopper;
  const absl::StatusOr<ServingStatus> health =
      StartDrain(server, &stopper, &stopped);
  EXPECT_EQ(health.value_or(ServingStatus::kServing),
            ServingStatus::kNotServing);
  // Draining, with the request still held half-way.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(done.HasBeenNotified()) << status.error_message();
  EXPECT_FALSE(stopped.HasBeenNotified());
  EXPECT_LT(relay.bytes_from_client(), int64_t{16} << 20);

  relay.Release();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.attention_out().data().size(), 128u * 64 * 4);
  stopper.join();
}

// A compute call without a valid token is refused on its headers, before
// its body is read, also on a plaintext port (where gRPC offers no hook of
// its own before the body).
TEST(ServerGuardTest, ComputeCallWithoutATokenIsRefusedBeforeItsBodyArrives) {
  const std::string tokens = WriteTokenFile();
  ServerOptions options = TestServer::DefaultOptions();
  options.auth_token_file = tokens;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  for (const std::string& authorization :
       {std::string(""), std::string("Bearer not-a-token")}) {
    // A connection of its own: what the relay holds back blocks it.
    TcpRelay relay(server.server().port());
    auto stub = v1::AttentionService::NewStub(RelayChannel(relay));
    relay.HoldFromClientAfter(1 << 20);  // The body never arrives whole.
    grpc::ClientContext context;
    SetTestDeadline(&context, absl::Seconds(30));
    if (!authorization.empty()) {
      context.AddMetadata("authorization", authorization);
    }
    v1::FlashAttentionScoreResponse response;
    const grpc::Status refused =
        stub->FlashAttentionScore(&context, LargeQuickRequest(), &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << refused.error_message();
    EXPECT_LT(relay.bytes_from_client(), int64_t{16} << 20);
  }
  std::remove(tokens.c_str());
}

// A caller that sends its next call as soon as an answer arrives: when that
// answer ends the drain, the next call is refused by the drain (UNAVAILABLE)
// rather than cut by the closing port (CANCELLED) or turned away by a closed
// one. (The linger is long here so that the test does not depend on how fast
// the next call arrives.)
TEST(ServerGuardTest, DrainRefusesTheNextCallOfACallerWhoseCallEndedIt) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 1;
  options.threads_per_request = 1;
  options.drain_linger = absl::Seconds(2);
  TestServer server(options);
  ASSERT_TRUE(server.started());

  const v1::FlashAttentionScoreRequest request = Request(2048, 64);
  grpc::ClientContext first_context;
  SetTestDeadline(&first_context, absl::Seconds(120));
  v1::FlashAttentionScoreResponse first_response;
  grpc::Status first_status;
  absl::Notification first_done;
  server.stub().async()->FlashAttentionScore(
      &first_context, &request, &first_response, [&](grpc::Status status) {
        first_status = std::move(status);
        first_done.Notify();
      });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (server.server().running_jobs() == 0 && !first_done.HasBeenNotified() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  std::thread stopper([&] { server.server().Shutdown(absl::Seconds(60)); });
  EXPECT_TRUE(first_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  grpc::ClientContext next_context;
  SetTestDeadline(&next_context, absl::Seconds(30));
  v1::FlashAttentionScoreResponse next_response;
  const grpc::Status next =
      server.stub().FlashAttentionScore(&next_context, request, &next_response);
  stopper.join();
  EXPECT_TRUE(first_status.ok()) << first_status.error_message();
  EXPECT_EQ(next.error_code(), grpc::StatusCode::UNAVAILABLE)
      << next.error_message();
  EXPECT_THAT(next.error_message(), HasSubstr("draining"));
}

TEST(ServerGuardTest, DrainTimeoutCancelsCallsStillRunning) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 1;
  options.threads_per_request = 1;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  // Far longer than the drain timeout (tens of seconds on one core).
  const v1::FlashAttentionScoreRequest slow = Request(32768, 128);
  grpc::ClientContext context;
  SetTestDeadline(&context, absl::Seconds(300));
  v1::FlashAttentionScoreResponse response;
  grpc::Status status;
  absl::Notification done;
  server.stub().async()->FlashAttentionScore(&context, &slow, &response,
                                             [&](grpc::Status s) {
                                               status = std::move(s);
                                               done.Notify();
                                             });
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server.server().running_jobs() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.server().running_jobs(), 1);
  const absl::Time start = absl::Now();
  server.server().Shutdown(absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
      << status.error_message();
}

TEST(ServerGuardTest, TensorLimitRefusesBeforeAnyWork) {
  ServerOptions options = TestServer::DefaultOptions();
  options.max_tensor_elements = 1000;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  const grpc::Status status =
      server.stub().FlashAttentionScore(&context, Request(128), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("2048 elements exceed the limit of 1000"));
}

TEST(ServerGuardTest, HostileShapeWithoutDataIsRefusedWithoutAllocating) {
  TestServer server;
  ASSERT_TRUE(server.started());
  v1::FlashAttentionScoreRequest request = Request(8);
  // 2^27 elements claimed (within the limit), no bytes sent.
  request.mutable_key()->clear_shape();
  for (int64_t d : {1, 1, 1 << 21, 64}) request.mutable_key()->add_shape(d);
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  const grpc::Status status =
      server.stub().FlashAttentionScore(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("key.data"));
}

TEST(ServerGuardTest, MemoryBudgetRefusesARequestThatCannotFit) {
  ServerOptions options = TestServer::DefaultOptions();
  // Room for a small request (its workspace is mostly the fixed per-thread
  // tiles, about 100 KiB) but not for one of 1024 tokens (about 550 KiB).
  options.memory_budget_bytes = 256 * 1024;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  // q, k, v and the output of 1 x 1 x 1024 x 16 fp32 are 64 KiB each, plus
  // K and V widened in the workspace.
  const grpc::Status status =
      server.stub().FlashAttentionScore(&context, Request(1024), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("memory budget"));

  grpc::ClientContext small_context;
  SetTestDeadline(&small_context);
  EXPECT_TRUE(server.stub()
                  .FlashAttentionScore(&small_context, Request(16), &response)
                  .ok());
}

}  // namespace
}  // namespace attnserve::server::testing
