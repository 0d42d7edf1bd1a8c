#include "attnload/load_generator.h"

#include <atomic>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve::attnload {
namespace {

using ::testing::HasSubstr;

LoadOptions Short(int concurrency) {
  LoadOptions options;
  options.concurrency = concurrency;
  options.duration = absl::Milliseconds(200);
  options.refused_backoff = absl::Milliseconds(1);
  return options;
}

TEST(LoadGeneratorTest, CountsCallsByCodeAndKeepsOkLatencies) {
  std::atomic<int> n{0};
  const LoadReport report =
      RunLoad(Short(3), [&](absl::Duration) -> absl::StatusOr<uint64_t> {
        absl::SleepFor(absl::Milliseconds(1));
        if (++n % 4 == 0) return absl::ResourceExhaustedError("queue full");
        return 42;
      });
  EXPECT_EQ(report.calls, n.load());
  EXPECT_GT(report.ok(), 0);
  EXPECT_EQ(
      report.ok() + report.by_code.at(absl::StatusCode::kResourceExhausted),
      report.calls);
  EXPECT_EQ(report.first_error.at(absl::StatusCode::kResourceExhausted),
            "queue full");
  EXPECT_EQ(report.mismatches, 0);
  EXPECT_EQ(static_cast<int64_t>(report.ok_latencies.size()), report.ok());
  EXPECT_GE(report.LatencyQuantile(0.5), 0.001);
  EXPECT_GT(report.throughput(), 0);
}

TEST(LoadGeneratorTest, MaxCallsStopsTheCallersAtThatCount) {
  LoadOptions options = Short(3);
  options.duration = absl::Seconds(60);
  options.max_calls = 25;
  std::atomic<int> n{0};
  const absl::Time start = absl::Now();
  const LoadReport report =
      RunLoad(options, [&](absl::Duration) -> absl::StatusOr<uint64_t> {
        ++n;
        return 42;
      });
  EXPECT_EQ(n.load(), 25);
  EXPECT_EQ(report.calls, 25);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(LoadGeneratorTest, DifferentAnswersToTheSameRequestAreMismatches) {
  std::atomic<int> n{0};
  const LoadReport report =
      RunLoad(Short(1), [&](absl::Duration) -> absl::StatusOr<uint64_t> {
        absl::SleepFor(absl::Milliseconds(1));
        return ++n == 5 ? 7 : 8;
      });
  EXPECT_EQ(report.mismatches, 1);
}

TEST(LoadGeneratorTest, MixedLoadComparesAnswersWithinEachCase) {
  // One caller, so that the wrong answer (case 2's third) is not the first
  // one the report compares with.
  std::atomic<int> n{0};
  LoadOptions options = Short(1);
  options.pause = absl::Milliseconds(1);
  const LoadReport report = RunMixedLoad(
      options, {"a", "b", "c"},
      [&](size_t index, absl::Duration) -> absl::StatusOr<uint64_t> {
        absl::SleepFor(absl::Milliseconds(1));
        if (index == 2 && ++n == 3) return 99;  // One wrong answer.
        return index;
      });
  ASSERT_EQ(report.cases.size(), 3u);
  int64_t calls = 0;
  for (const CaseReport& c : report.cases) {
    EXPECT_GT(c.calls, 0) << c.name;  // Random choice reaches every case.
    EXPECT_EQ(c.ok(), c.calls);
    EXPECT_EQ(static_cast<int64_t>(c.ok_latencies.size()), c.ok());
    calls += c.calls;
  }
  EXPECT_EQ(calls, report.calls);
  EXPECT_EQ(report.cases[0].mismatches, 0);
  EXPECT_EQ(report.cases[2].mismatches, n >= 3 ? 1 : 0);
  EXPECT_EQ(report.mismatches, report.cases[2].mismatches);
  const std::string text = FormatReport(report);
  EXPECT_THAT(text, HasSubstr("case.1: b\ncase.1.calls: "));
  EXPECT_THAT(text, HasSubstr("case.2.latency_p99_ms: "));
}

TEST(LoadGeneratorTest, SingleLoadHasNoCases) {
  const LoadReport report =
      RunLoad(Short(1), [](absl::Duration) -> absl::StatusOr<uint64_t> {
        absl::SleepFor(absl::Milliseconds(1));
        return 1;
      });
  EXPECT_TRUE(report.cases.empty());
  EXPECT_THAT(FormatReport(report), ::testing::Not(HasSubstr("case.")));
}

TEST(LoadGeneratorTest, QuantilesUseNearestRank) {
  LoadReport report;
  for (int i = 1; i <= 100; ++i) report.ok_latencies.push_back(i / 1000.0);
  report.by_code[absl::StatusCode::kOk] = 100;
  EXPECT_DOUBLE_EQ(report.LatencyQuantile(0.5), 0.050);
  EXPECT_DOUBLE_EQ(report.LatencyQuantile(0.99), 0.099);
  EXPECT_DOUBLE_EQ(report.LatencyQuantile(1.0), 0.100);
  EXPECT_EQ(LoadReport().LatencyQuantile(0.5), 0);
}

TEST(LoadGeneratorTest, ReportHasOneKeyValueLinePerFigure) {
  LoadReport report;
  report.calls = 3;
  report.by_code[absl::StatusCode::kOk] = 2;
  report.by_code[absl::StatusCode::kUnavailable] = 1;
  report.first_error[absl::StatusCode::kUnavailable] = "draining";
  report.ok_latencies = {0.001, 0.002};
  report.elapsed_seconds = 1;
  const std::string text = FormatReport(report);
  EXPECT_THAT(text, HasSubstr("calls: 3\nok: 2\n"));
  EXPECT_THAT(text, HasSubstr("code.UNAVAILABLE: 1\n"));
  EXPECT_THAT(text, HasSubstr("error.UNAVAILABLE: draining\n"));
  EXPECT_THAT(text, HasSubstr("throughput_rps: 2.0\n"));
  EXPECT_THAT(text, HasSubstr("latency_p50_ms: 1.000\n"));
}

}  // namespace
}  // namespace attnserve::attnload
