// Server start-up, option validation and shutdown.
#include <climits>
#include <thread>

#include "absl/synchronization/notification.h"
#include "attnserve/core/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/test_server.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server::testing {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

TEST(ServerLifecycleTest, InvalidOptionsAreRejectedNamingTheOption) {
  const struct {
    void (*mutate)(ServerOptions*);
    const char* field;
  } cases[] = {
      {[](ServerOptions* o) { o->queue_depth = 0; }, "queue_depth"},
      {[](ServerOptions* o) { o->workers = -1; }, "workers"},
      {[](ServerOptions* o) { o->max_message_bytes = int64_t{INT_MAX} + 1; },
       "max_message_bytes"},
      {[](ServerOptions* o) { o->max_message_bytes = 0; }, "max_message_bytes"},
      {[](ServerOptions* o) { o->threads_per_request = 0; },
       "threads_per_request"},
      {[](ServerOptions* o) { o->listen_address.clear(); }, "listen_address"},
  };
  for (const auto& c : cases) {
    ServerOptions options = TestServer::DefaultOptions();
    c.mutate(&options);
    Server server(options);
    absl::Status status = server.Start();
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr(c.field)));
    EXPECT_EQ(core::FieldOf(status), c.field);
    EXPECT_EQ(server.port(), 0);
  }
}

TEST(ServerLifecycleTest, PortZeroReportsTheChosenPortAndWorkers) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 3;
  Server server(options);
  ASSERT_THAT(server.Start(), IsOk());
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.workers(), 3);
  EXPECT_FALSE(server.backends().empty());
  EXPECT_THAT(server.Start(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("already")));
  server.Shutdown();
}

TEST(ServerLifecycleTest, ZeroWorkersMeansOnePerHardwareThread) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 0;
  Server server(options);
  ASSERT_THAT(server.Start(), IsOk());
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(server.workers(), hardware > 0 ? hardware : 1);
}

TEST(ServerLifecycleTest, UnusableAddressFailsToStart) {
  ServerOptions options = TestServer::DefaultOptions();
  // A documentation-only address no local interface holds: bind fails.
  options.listen_address = "192.0.2.1:0";
  Server server(options);
  EXPECT_THAT(server.Start(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("192.0.2.1")));
}

TEST(ServerLifecycleTest, ShutdownReleasesWaitAndStopsServing) {
  TestServer server;
  ASSERT_TRUE(server.started());
  absl::Notification waited;
  std::thread waiter([&] {
    server.server().Wait();
    waited.Notify();
  });
  EXPECT_FALSE(waited.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  server.server().Shutdown(absl::Seconds(1));
  EXPECT_TRUE(waited.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
  server.server().Shutdown();  // Idempotent.

  grpc::ClientContext context;
  SetTestDeadline(&context, absl::Seconds(5));
  v1::GetServerInfoResponse info;
  grpc::Status status =
      server.stub().GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(ServerLifecycleTest, WaitWithoutStartReturnsAtOnce) {
  Server server(TestServer::DefaultOptions());
  server.Wait();
  server.Shutdown();
}

}  // namespace
}  // namespace attnserve::server::testing
