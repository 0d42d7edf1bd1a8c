// A response is memory the server holds until its client has read it: a
// client that stops reading keeps the outputs charged to the memory budget
// (--memory_budget_bytes) after the computation ended, and they are given
// back once the response has gone. The client reaches the real server
// through a TCP relay that can stop passing the server's bytes on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server {
namespace {

using ::attnserve::server::testing::Bnsd;
using ::attnserve::server::testing::Pack;
using ::attnserve::server::testing::SetTestDeadline;
using ::attnserve::server::testing::TestServer;

// Relays one TCP connection from a loopback port to `server_port`, both
// ways. StallAfter(n): once n more bytes came from the server, it reads
// nothing more from it, and the server's bytes pile up in the socket
// buffers and the HTTP/2 windows. (Not at once: while a request uploads,
// the server's window updates must reach the client.)
class Relay {
 public:
  explicit Relay(int server_port) : server_port_(server_port) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(listener_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        listen(listener_, 1) != 0 ||
        getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "relay: cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~Relay() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close(listener_);
  }

  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  void StallAfter(int64_t bytes) { stall_at_ = from_server_ + bytes; }
  void Resume() { stall_at_ = INT64_MAX; }
  int64_t bytes_from_server() const { return from_server_; }

 private:
  void Run() {
    pollfd accept_fd{listener_, POLLIN, 0};
    while (!stop_ && poll(&accept_fd, 1, 50) == 0) {
    }
    if (stop_) return;
    const int client = accept(listener_, nullptr, nullptr);
    const int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(server_port_));
    if (client < 0 || connect(server, reinterpret_cast<sockaddr*>(&addr),
                              sizeof(addr)) != 0) {
      ADD_FAILURE() << "relay: cannot connect";
      return;
    }
    std::vector<char> buffer(1 << 16);
    // Copies what `from` has into `to`; false once either side closed.
    auto pass = [&](int from, int to) {
      const ssize_t n = read(from, buffer.data(), buffer.size());
      if (n <= 0) return false;
      for (ssize_t done = 0; done < n;) {
        const ssize_t w = write(to, buffer.data() + done, n - done);
        if (w <= 0) return false;
        done += w;
      }
      if (from == server) from_server_ += n;
      return true;
    };
    while (!stop_) {
      const bool stalled = from_server_ >= stall_at_;
      pollfd fds[2] = {{client, POLLIN, 0},
                       {server, static_cast<short>(stalled ? 0 : POLLIN), 0}};
      if (poll(fds, 2, 20) < 0) break;
      if ((fds[0].revents & (POLLIN | POLLHUP)) && !pass(client, server)) break;
      if ((fds[1].revents & (POLLIN | POLLHUP)) && !pass(server, client)) break;
    }
    close(client);
    close(server);
  }

  const int server_port_;
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> stall_at_{INT64_MAX};
  std::atomic<int64_t> from_server_{0};
};

// Waits up to `within` for request_memory_bytes() to become `bytes`.
uint64_t RequestMemoryBecomes(Server& server, uint64_t bytes,
                              absl::Duration within) {
  const absl::Time end = absl::Now() + within;
  while (server.request_memory_bytes() != bytes && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  return server.request_memory_bytes();
}

TEST(ResponseMemoryTest, AnUnreadResponseStaysChargedUntilItIsSent) {
  ServerOptions options = TestServer::DefaultOptions();
  options.memory_budget_bytes = uint64_t{1} << 30;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  Relay relay(server.port());

  // 65536 queries of 96 fp32 against 16 keys: a quick kernel with a 24 MiB
  // output (plus 2 MiB each of softmax max and sum), several times what
  // the socket buffers and HTTP/2 windows take in.
  const Bnsd q{1, 1, 65536, 96}, kv{1, 1, 16, 96};
  v1::FlashAttentionScoreRequest request;
  *request.mutable_query() =
      Pack("BNSD", q, std::vector<double>(static_cast<size_t>(q.count()), 0.5));
  *request.mutable_key() = Pack(
      "BNSD", kv, std::vector<double>(static_cast<size_t>(kv.count()), 0.25));
  *request.mutable_value() = Pack(
      "BNSD", kv, std::vector<double>(static_cast<size_t>(kv.count()), 1.0));
  request.set_head_num(1);
  request.set_input_layout("BNSD");
  const uint64_t output_bytes = 65536 * 96 * 4 + 2 * 65536 * 8 * 4;

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      relay.target(), grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<v1::AttentionService::Stub> stub =
      v1::AttentionService::NewStub(channel);
  {  // Connected through the relay first; then it holds the server's bytes.
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(
        stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok());
  }
  relay.StallAfter(1 << 20);
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  grpc::Status status;
  std::thread caller([&] {
    status = stub->FlashAttentionScore(&context, request, &response);
  });

  // The computation ends; its outputs stay charged while the client does
  // not read them.
  EXPECT_EQ(
      RequestMemoryBecomes(server.server(), output_bytes, absl::Seconds(60)),
      output_bytes);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(server.server().running_jobs(), 0);
  EXPECT_EQ(server.server().in_flight(), 1);
  EXPECT_EQ(server.server().request_memory_bytes(), output_bytes);
  EXPECT_LT(relay.bytes_from_server(), static_cast<int64_t>(output_bytes));

  // Read on: the response arrives whole and the bytes are given back.
  relay.Resume();
  caller.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.attention_out().data().size(), 65536u * 96 * 4);
  EXPECT_EQ(RequestMemoryBecomes(server.server(), 0, absl::Seconds(10)), 0u);
}

}  // namespace
}  // namespace attnserve::server
