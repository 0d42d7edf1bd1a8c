// Shared pieces of the end-to-end tests: where the built programs are, a
// fixture that runs a fresh attnserve for every test, and output parsing.
//
//   TEST_F(ServerTest, HealthIsServing) {
//     ProcessResult r = Run({kAttnctlBinary, "health", TargetFlag()});
//     EXPECT_EQ(r.exit_code, 0) << Describe(r);
//   }
#ifndef ATTNSERVE_TESTS_E2E_E2E_FIXTURE_H_
#define ATTNSERVE_TESTS_E2E_E2E_FIXTURE_H_

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/e2e/subprocess.h"
#include "tests/testing/http_get.h"

namespace attnserve::e2e {

// Paths given by CMake (see tests/e2e/CMakeLists.txt); empty when the
// program was not found.
inline const std::string kAttnserveBinary = ATTNSERVE_BINARY;
inline const std::string kAttnctlBinary = ATTNCTL_BINARY;
inline const std::string kAttnloadBinary = ATTNLOAD_BINARY;
inline const std::string kBufBinary = BUF_EXECUTABLE;
inline const std::string kOpensslBinary = OPENSSL_BINARY;
inline const std::string kNginxBinary = NGINX_BINARY;
inline const std::string kDeployDir = DEPLOY_DIR;
inline const std::string kDocsDir = DOCS_DIR;
inline const std::string kProtoDir = PROTO_DIR;

// Upper bound on any one program run by a test.
inline constexpr absl::Duration kRunTimeout = absl::Seconds(120);

// Starts attnserve (2 workers) before each test and stops it after; the
// test fails when the server does not exit cleanly on SIGTERM.
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(kAttnserveBinary, {"--workers=2"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    if (server_ == nullptr) return;
    const int exit_code = server_->Stop();
    EXPECT_EQ(exit_code, 0) << "attnserve log:\n" << server_->log();
  }

  std::string TargetFlag() const { return "--target=" + server_->target(); }

  // Runs `argv`, failing the test if it cannot start.
  ProcessResult Run(const std::vector<std::string>& argv,
                    const std::vector<std::string>& extra_env = {}) {
    absl::StatusOr<ProcessResult> result =
        RunProcess(argv, kRunTimeout, extra_env);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return ProcessResult{};
    EXPECT_FALSE(result->timed_out) << Describe(*result);
    return *std::move(result);
  }

  std::unique_ptr<ServerProcess> server_;
};

// The value of the `key: value` line of `text` for `key`, parsed as a
// number; -1 when the line is missing.
inline double ReportValue(const std::string& text, absl::string_view key) {
  const std::string line = [&] {
    for (absl::string_view l : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(l, key) && l.size() > key.size() &&
          l[key.size()] == ':') {
        return std::string(l);
      }
    }
    return std::string();
  }();
  double value = -1;
  if (line.empty() ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(
                            absl::string_view(line).substr(key.size() + 1)),
                        &value)) {
    return -1;
  }
  return value;
}

// Polls the Prometheus endpoint on `metrics_port` until the sample `series`
// (see test::MetricValue) is at least `minimum` or `timeout` passes; returns
// the last value read (-1 when it could not be read). For waiting on server
// state (a job on a worker, a call in flight) instead of sleeping for a
// guessed time: on a loaded machine a large request can take seconds to
// arrive.
inline double AwaitMetricAtLeast(int metrics_port, const std::string& series,
                                 double minimum, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::StatusOr<test::HttpResponse> r =
        test::HttpGet(metrics_port, "/metrics");
    const double value = r.ok() ? test::MetricValue(r->body, series) : -1;
    if (value >= minimum || absl::Now() >= deadline) return value;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// The server's Prometheus text from `metrics_port` ("" and a test failure
// when it cannot be read).
inline std::string Metrics(int metrics_port) {
  absl::StatusOr<test::HttpResponse> r =
      test::HttpGet(metrics_port, "/metrics");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->body : "";
}

// The metrics once the server holds nothing: no call in flight and no
// memory admitted (a worker updates its gauges just after answering, so
// callers can be a moment ahead). Gives up after 30 s and returns the last.
inline std::string IdleMetrics(int metrics_port) {
  std::string metrics = Metrics(metrics_port);
  for (const absl::Time deadline = absl::Now() + absl::Seconds(30);
       absl::Now() < deadline &&
       (test::MetricValue(metrics, "attnserve_in_flight_requests") != 0 ||
        test::MetricValue(metrics, "attnserve_admitted_memory_bytes") != 0);) {
    absl::SleepFor(absl::Milliseconds(10));
    metrics = Metrics(metrics_port);
  }
  return metrics;
}

// The whole seconds in the environment variable `name` when it is set to a
// number of at least `minimum`, else `fallback` (a test's run length).
inline int SecondsFromEnv(const char* name, int fallback, int minimum) {
  int seconds = 0;
  const char* env = std::getenv(name);
  if (env != nullptr && absl::SimpleAtoi(env, &seconds) && seconds >= minimum) {
    return seconds;
  }
  return fallback;
}

// The first line of `text` that starts with `prefix`, or "" if none does.
inline std::string LineStartingWith(const std::string& text,
                                    absl::string_view prefix) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) return std::string(line);
  }
  return "";
}

}  // namespace attnserve::e2e

#endif  // ATTNSERVE_TESTS_E2E_E2E_FIXTURE_H_
