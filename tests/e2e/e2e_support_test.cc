// The process helpers the end-to-end tests stand on: they must report exit
// codes and output faithfully and never hang.
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/e2e/subprocess.h"

namespace attnserve::e2e {
namespace {

using ::testing::HasSubstr;

TEST(RunProcessTest, CapturesStdoutStderrAndExitCode) {
  absl::StatusOr<ProcessResult> r = RunProcess(
      {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(RunProcessTest, PassesExtraEnvironment) {
  absl::StatusOr<ProcessResult> r =
      RunProcess({"/bin/sh", "-c", "echo \"$ATTN_E2E_PROBE\""},
                 absl::Seconds(30), {"ATTN_E2E_PROBE=42"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "42\n");
}

TEST(RunProcessTest, KillsAProcessThatOutlivesItsTimeout) {
  const absl::Time start = absl::Now();
  absl::StatusOr<ProcessResult> r =
      RunProcess({"/bin/sh", "-c", "exec sleep 30"}, absl::Milliseconds(200));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_NE(r->exit_code, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(RunProcessTest, MissingProgramIsAnError) {
  EXPECT_FALSE(RunProcess({"/nonexistent/attnctl"}, absl::Seconds(5)).ok());
  EXPECT_FALSE(RunProcess({""}, absl::Seconds(5)).ok());
}

TEST(ServerProcessTest, ServerThatExitsAtOnceFailsToStart) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start("/bin/false", {}, absl::Seconds(10));
  EXPECT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("exited with 1"));
}

TEST(ServerProcessTest, MissingServerBinaryFailsToStart) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start("/nonexistent/attnserve", {}, absl::Seconds(10));
  EXPECT_THAT(server.status().message(), HasSubstr("cannot execute"));
}

TEST(ServerProcessTest, PickFreePortGivesABindablePort) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace attnserve::e2e
