// A real attnserve server on 127.0.0.1 (port picked by the OS) with a client
// channel and the generated stub, for in-process round-trip tests.
//
//   TestServer server;                      // Started; fails the test if not.
//   grpc::ClientContext context;
//   SetTestDeadline(&context);
//   grpc::Status status = server.stub().GetServerInfo(&context, {}, &info);
#ifndef ATTNSERVE_TESTS_SERVER_TEST_SERVER_H_
#define ATTNSERVE_TESTS_SERVER_TEST_SERVER_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/server.h"

namespace attnserve::server::testing {

class TestServer {
 public:
  // Loopback, port 0, 2 workers, queue depth 8, default message limit, no
  // drain linger.
  static ServerOptions DefaultOptions();

  explicit TestServer(const ServerOptions& options = DefaultOptions());
  ~TestServer();

  bool started() const { return started_; }
  int port() const { return server_.port(); }
  // "127.0.0.1:<port>", or the listen address when it is a unix socket.
  std::string target() const;
  Server& server() { return server_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  v1::AttentionService::Stub& stub() { return *stub_; }

 private:
  Server server_;
  std::string listen_address_;
  bool started_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

// Bounds every test call so that a hang fails instead of blocking forever.
void SetTestDeadline(grpc::ClientContext* context,
                     absl::Duration timeout = absl::Seconds(60));

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_TEST_SERVER_H_
