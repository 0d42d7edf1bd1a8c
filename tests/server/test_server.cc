#include "tests/server/test_server.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace attnserve::server::testing {

ServerOptions TestServer::DefaultOptions() {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.workers = 2;
  options.queue_depth = 8;
  // No linger at shutdown: nothing sends calls into the drain of a test
  // server unless the test says so (and then sets its own linger).
  options.drain_linger = absl::ZeroDuration();
  return options;
}

TestServer::TestServer(const ServerOptions& options)
    : server_(options), listen_address_(options.listen_address) {
  absl::Status status = server_.Start();
  if (!status.ok()) {
    ADD_FAILURE() << "server did not start: " << status;
    return;
  }
  started_ = true;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(
      target(), grpc::InsecureChannelCredentials(), args);
  stub_ = v1::AttentionService::NewStub(channel_);
}

TestServer::~TestServer() { server_.Shutdown(absl::Seconds(5)); }

std::string TestServer::target() const {
  // A unix socket is dialed at the address it listens on.
  if (absl::StartsWith(listen_address_, "unix:")) return listen_address_;
  return absl::StrCat("127.0.0.1:", server_.port());
}

void SetTestDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

}  // namespace attnserve::server::testing
