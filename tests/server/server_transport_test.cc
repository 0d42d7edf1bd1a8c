// The HTTP/2 connection limits (transport_limits.h) against a real server
// and real client channels: streams per connection, idle connections,
// clients that ping too often, and the options' validation.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/client/client.h"
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

// A forward that takes a noticeable time (a hundred milliseconds or more).
v1::FlashAttentionScoreRequest SlowForward() {
  v1::FlashAttentionScoreRequest r;
  const Bnsd dims{1, 8, 4096, 64};
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

// Reads exactly `size` bytes; false on error, timeout or end of stream.
bool ReadFully(int fd, uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = read(fd, data, size);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// The parameters of the SETTINGS frame a server sends first on a new HTTP/2
// connection (RFC 9113, 3.4 and 6.5), by identifier: what any client learns
// of the server's limits before it opens a stream.
absl::StatusOr<std::map<int, uint32_t>> ServerSettings(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect to port ", port));
  }
  // The client preface and an empty SETTINGS frame.
  std::string hello = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  hello.append("\0\0\0\x04\0\0\0\0\0", 9);
  if (send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(hello.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  uint8_t header[9];
  std::string payload;
  const bool read = ReadFully(fd, header, sizeof(header)) && [&] {
    payload.resize((size_t{header[0]} << 16) | (size_t{header[1]} << 8) |
                   header[2]);
    return ReadFully(fd, reinterpret_cast<uint8_t*>(payload.data()),
                     payload.size());
  }();
  close(fd);
  if (!read) return absl::UnavailableError("no frame from the server");
  if (header[3] != 0x04 || payload.size() % 6 != 0) {
    return absl::InternalError(absl::StrCat("the first frame is of type ",
                                            header[3], ", not SETTINGS"));
  }
  std::map<int, uint32_t> settings;
  for (size_t i = 0; i < payload.size(); i += 6) {
    const auto byte = [&](size_t k) {
      return static_cast<uint32_t>(static_cast<uint8_t>(payload[i + k]));
    };
    settings[static_cast<int>((byte(0) << 8) | byte(1))] =
        (byte(2) << 24) | (byte(3) << 16) | (byte(4) << 8) | byte(5);
  }
  return settings;
}

constexpr int kMaxConcurrentStreams = 0x3;  // RFC 9113, 6.5.2.

// How long the server had two jobs or more (queued or running) while
// `callers` threads each made one slow forward on the test server's one
// channel. Jobs, not calls in flight: under load a finished call may stay
// counted in flight until gRPC runs its completion, after the client has its
// answer and the next call arrived; a job ends before its answer is sent.
absl::Duration TimeWithJobsOverlapping(TestServer& server, int callers) {
  std::atomic<bool> done{false};
  absl::Duration overlapping;
  std::thread watcher([&] {
    absl::Time last = absl::Now();
    while (!done.load()) {
      const bool overlap =
          server.server().running_jobs() + server.server().queued_jobs() >= 2;
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
  // What the server tells every client ...
  absl::StatusOr<std::map<int, uint32_t>> settings =
      ServerSettings(limited.server().port());
  ASSERT_THAT(settings.status(), IsOk());
  EXPECT_EQ(settings->count(kMaxConcurrentStreams), 1u);
  EXPECT_EQ((*settings)[kMaxConcurrentStreams], 1u);
  // ... and what that does to a real client's calls on one channel.
  // Each call computes for 100 ms or more (34 GFLOP: 130 ms at the 270
  // GFLOP/s of a fast two-core host); with one stream per connection the
  // next request cannot reach the server before the last answer left it, so
  // no two jobs are ever admitted together (measured: 0 ms, also with both
  // cores busy elsewhere).
  EXPECT_LT(TimeWithJobsOverlapping(limited, 4), absl::Milliseconds(30));

  // The same calls without the limit overlap (what the limit prevents;
  // measured 190-510 ms).
  TestServer open;
  ASSERT_TRUE(open.started());
  settings = ServerSettings(open.server().port());
  ASSERT_THAT(settings.status(), IsOk());
  EXPECT_EQ((*settings)[kMaxConcurrentStreams],
            static_cast<uint32_t>(TransportLimits().max_concurrent_streams));
  EXPECT_GE(TimeWithJobsOverlapping(open, 4), absl::Milliseconds(100));
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

// Same-host clients can skip TCP: the server listens on a unix socket
// (--listen=unix:<path>), and the client dials it by that address. The
// answer equals the one over TCP bit for bit.
TEST(ServerTransportTest, ServesSameHostClientsOnAUnixSocket) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "attnserve-", getpid(), ".sock");
  unlink(path.c_str());
  ServerOptions options = TestServer::DefaultOptions();
  options.listen_address = "unix:" + path;
  TestServer on_unix(options);
  ASSERT_TRUE(on_unix.started());
  TestServer on_tcp;
  ASSERT_TRUE(on_tcp.started());

  v1::FlashAttentionScoreRequest request;
  const Bnsd dims{1, 2, 256, 64};
  *request.mutable_query() =
      Pack("BNSD", dims, testing::RandomValues(dims.count(), 1));
  *request.mutable_key() =
      Pack("BNSD", dims, testing::RandomValues(dims.count(), 2));
  *request.mutable_value() =
      Pack("BNSD", dims, testing::RandomValues(dims.count(), 3));
  request.set_head_num(dims.n);
  request.set_input_layout("BNSD");
  absl::StatusOr<Client> unix_client = Client::Connect(on_unix.target());
  ASSERT_THAT(unix_client.status(), IsOk());
  absl::StatusOr<v1::FlashAttentionScoreResponse> by_unix =
      unix_client->FlashAttentionScore(request, absl::Seconds(60));
  ASSERT_THAT(by_unix.status(), IsOk());
  absl::StatusOr<Client> tcp_client = Client::Connect(on_tcp.target());
  ASSERT_THAT(tcp_client.status(), IsOk());
  absl::StatusOr<v1::FlashAttentionScoreResponse> by_tcp =
      tcp_client->FlashAttentionScore(request, absl::Seconds(60));
  ASSERT_THAT(by_tcp.status(), IsOk());
  EXPECT_TRUE(by_unix->attention_out().data() ==
              by_tcp->attention_out().data());
  EXPECT_EQ(by_unix->attention_out().data().size(),
            static_cast<size_t>(dims.count() * 4));
  on_unix.server().Shutdown(absl::Seconds(5));
  unlink(path.c_str());
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
