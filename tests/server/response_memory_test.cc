// A response is memory the server holds until its client has read it: a
// client that stops reading keeps the outputs charged to the memory budget
// (--memory_budget_bytes) after the computation ended, and they are given
// back once the response has gone. The client reaches the real server
// through a TCP relay that can stop passing the server's bytes on.
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
#include "tests/server/tcp_relay.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server {
namespace {

using ::attnserve::server::testing::Bnsd;
using ::attnserve::server::testing::Pack;
using ::attnserve::server::testing::SetTestDeadline;
using ::attnserve::server::testing::TcpRelay;
using ::attnserve::server::testing::TestServer;

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
  TcpRelay relay(server.port());

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
  relay.HoldFromServerAfter(1 << 20);
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
  relay.Release();
  caller.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.attention_out().data().size(), 65536u * 96 * 4);
  EXPECT_EQ(RequestMemoryBecomes(server.server(), 0, absl::Seconds(10)), 0u);
}

}  // namespace
}  // namespace attnserve::server
