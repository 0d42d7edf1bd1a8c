// The HTTP/2 connection limits (transport_limits.h) against a real server
// and real client channels: streams per connection, idle connections,
// clients that ping too often, and the options' validation.
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/transport_limits.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::server::testing::Bnsd;
using ::attnserve::server::testing::Pack;
using ::attnserve::server::testing::SetTestDeadline;
using ::attnserve::server::testing::TestServer;
using ::attnserve::test::IsOk;
using ::testing::HasSubstr;

v1::Tensor Zeros(const Bnsd& dims) {
  return Pack("BNSD", dims,
              std::vector<double>(static_cast<size_t>(dims.count()), 0.0));
}

// A forward that takes a noticeable time (tens of milliseconds or more).
v1::FlashAttentionScoreRequest SlowForward() {
  v1::FlashAttentionScoreRequest r;
  const Bnsd dims{1, 8, 1024, 128};
  *r.mutable_query() = Zeros(dims);
  *r.mutable_key() = Zeros(dims);
  *r.mutable_value() = Zeros(dims);
  r.set_head_num(8);
  r.set_input_layout("BNSD");
  return r;
}

grpc::Status GetInfo(v1::AttentionService::Stub& stub) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::GetServerInfoResponse info;
  return stub.GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
}

// Whether `channel` leaves READY within `within` (the server closed the
// connection).
bool LeavesReady(grpc::Channel& channel, absl::Duration within) {
  const absl::Time end = absl::Now() + within;
  while (absl::Now() < end) {
    if (channel.GetState(false) != GRPC_CHANNEL_READY) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

// How long the server had two calls or more in flight while `callers`
// threads each made one slow forward on the test server's one channel. (Not
// the most in flight: when one call's answer reaches its client, the next
// call's stream may open and its handler start a moment before the server
// has counted the first call done.)
absl::Duration TimeWithCallsOverlapping(TestServer& server, int callers) {
  std::atomic<bool> done{false};
  absl::Duration overlapping;
  std::thread watcher([&] {
    absl::Time last = absl::Now();
    while (!done.load()) {
      const bool overlap = server.server().in_flight() >= 2;
      absl::SleepFor(absl::Milliseconds(1));
      const absl::Time now = absl::Now();
      if (overlap) overlapping += now - last;
      last = now;
    }
  });
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  const v1::FlashAttentionScoreRequest request = SlowForward();
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&] {
      grpc::ClientContext context;
      SetTestDeadline(&context, absl::Seconds(120));
      v1::FlashAttentionScoreResponse response;
      if (!server.stub()
               .FlashAttentionScore(&context, request, &response)
               .ok()) {
        failed.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  done.store(true);
  watcher.join();
  EXPECT_EQ(failed.load(), 0);
  return overlapping;
}

TEST(ServerTransportTest, OneStreamPerConnectionRunsTheCallsOneAtATime) {
  ServerOptions options = TestServer::DefaultOptions();
  options.transport.max_concurrent_streams = 1;
  TestServer limited(options);
  ASSERT_TRUE(limited.started());
  // Each call computes for 60 ms or more; calls in flight together would
  // be so for at least that long (waiting or computing).
  EXPECT_LT(TimeWithCallsOverlapping(limited, 3), absl::Milliseconds(30));

  // The same calls without the limit overlap (what the limit prevents).
  TestServer open;
  ASSERT_TRUE(open.started());
  EXPECT_GE(TimeWithCallsOverlapping(open, 3), absl::Milliseconds(100));
}

TEST(ServerTransportTest, IdleConnectionsAreClosedAndClientsReconnect) {
  ServerOptions options = TestServer::DefaultOptions();
  options.transport.max_connection_idle = absl::Milliseconds(300);
  TestServer server(options);
  ASSERT_TRUE(server.started());
  ASSERT_TRUE(GetInfo(server.stub()).ok());
  EXPECT_TRUE(LeavesReady(*server.channel(), absl::Seconds(10)));
  EXPECT_TRUE(GetInfo(server.stub()).ok());  // A new connection.

  TestServer kept;  // The default keeps an idle connection for 30 minutes.
  ASSERT_TRUE(kept.started());
  ASSERT_TRUE(GetInfo(kept.stub()).ok());
  EXPECT_FALSE(LeavesReady(*kept.channel(), absl::Seconds(1)));
}

TEST(ServerTransportTest, ClientsThatPingTooOftenAreDisconnected) {
  TestServer server;  // Clients may ping every 10 s.
  ASSERT_TRUE(server.started());
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 50);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  std::shared_ptr<grpc::Channel> pinger = grpc::CreateCustomChannel(
      server.target(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::AttentionService::NewStub(pinger);
  ASSERT_TRUE(GetInfo(*stub).ok());
  EXPECT_TRUE(LeavesReady(*pinger, absl::Seconds(10)));

  // A client pinging within the allowed rate keeps its connection.
  ServerOptions options = TestServer::DefaultOptions();
  options.transport.min_client_ping_interval = absl::Milliseconds(10);
  TestServer tolerant(options);
  ASSERT_TRUE(tolerant.started());
  std::shared_ptr<grpc::Channel> polite = grpc::CreateCustomChannel(
      tolerant.target(), grpc::InsecureChannelCredentials(), args);
  auto polite_stub = v1::AttentionService::NewStub(polite);
  ASSERT_TRUE(GetInfo(*polite_stub).ok());
  EXPECT_FALSE(LeavesReady(*polite, absl::Seconds(1)));
}

TEST(ServerTransportTest, LimitsAreValidated) {
  EXPECT_THAT(ValidateTransportLimits(TransportLimits()), IsOk());
  TransportLimits limits;
  limits.max_concurrent_streams = 0;
  EXPECT_THAT(ValidateTransportLimits(limits).message(),
              HasSubstr("max_concurrent_streams"));
  limits = TransportLimits();
  limits.keepalive_time = absl::ZeroDuration();
  EXPECT_THAT(ValidateTransportLimits(limits).message(),
              HasSubstr("keepalive_time"));
  limits = TransportLimits();
  limits.max_connection_idle = absl::Seconds(-1);
  EXPECT_THAT(ValidateTransportLimits(limits).message(),
              HasSubstr("max_connection_idle"));
  ServerOptions options = TestServer::DefaultOptions();
  options.transport.max_connection_age = absl::InfiniteDuration();
  Server server(options);
  EXPECT_THAT(server.Start().message(), HasSubstr("max_connection_age"));
}

}  // namespace
}  // namespace attnserve::server
