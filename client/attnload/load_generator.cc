#include "attnload/load_generator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <thread>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace attnserve::attnload {
namespace {

// What one caller saw; merged at the end so callers never share a lock.
struct CallerTally {
  int64_t calls = 0;
  std::map<absl::StatusCode, int64_t> by_code;
  std::map<absl::StatusCode, std::string> first_error;
  std::vector<uint64_t> fingerprints;
  std::vector<double> ok_latencies;
};

uint64_t TensorHash(const v1::Tensor& tensor) {
  return absl::HashOf(
      static_cast<int>(tensor.dtype()),
      std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()),
      tensor.data());
}

}  // namespace

int64_t LoadReport::ok() const {
  const auto it = by_code.find(absl::StatusCode::kOk);
  return it == by_code.end() ? 0 : it->second;
}

double LoadReport::throughput() const {
  return elapsed_seconds > 0 ? static_cast<double>(ok()) / elapsed_seconds
                             : 0.0;
}

double LoadReport::LatencyQuantile(double q) const {
  if (ok_latencies.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(ok_latencies.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return ok_latencies[std::min(index, ok_latencies.size() - 1)];
}

uint64_t Fingerprint(const v1::FlashAttentionScoreResponse& response) {
  return absl::HashOf(TensorHash(response.attention_out()),
                      TensorHash(response.softmax_max()),
                      TensorHash(response.softmax_sum()));
}

LoadReport RunLoad(const LoadOptions& options, const CallFn& call) {
  const int callers = std::max(1, options.concurrency);
  std::vector<CallerTally> tallies(static_cast<size_t>(callers));
  const absl::Time start = absl::Now();
  const absl::Time stop = start + options.duration;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(callers));
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i] {
      CallerTally& tally = tallies[static_cast<size_t>(i)];
      while (absl::Now() < stop) {
        const absl::Time begin = absl::Now();
        absl::StatusOr<uint64_t> result = call(options.timeout);
        const double seconds = absl::ToDoubleSeconds(absl::Now() - begin);
        ++tally.calls;
        const absl::StatusCode code = result.status().code();
        ++tally.by_code[code];
        if (result.ok()) {
          tally.fingerprints.push_back(*result);
          tally.ok_latencies.push_back(seconds);
        } else if (tally.first_error.count(code) == 0) {
          tally.first_error[code] = std::string(result.status().message());
        }
        if (code == absl::StatusCode::kResourceExhausted) {
          absl::SleepFor(options.refused_backoff);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  LoadReport report;
  report.elapsed_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::optional<uint64_t> reference;
  for (const CallerTally& tally : tallies) {
    report.calls += tally.calls;
    for (const auto& [code, n] : tally.by_code) report.by_code[code] += n;
    for (const auto& [code, message] : tally.first_error) {
      report.first_error.emplace(code, message);
    }
    for (uint64_t fingerprint : tally.fingerprints) {
      if (!reference) reference = fingerprint;
      if (fingerprint != *reference) ++report.mismatches;
    }
    report.ok_latencies.insert(report.ok_latencies.end(),
                               tally.ok_latencies.begin(),
                               tally.ok_latencies.end());
  }
  std::sort(report.ok_latencies.begin(), report.ok_latencies.end());
  return report;
}

std::string FormatReport(const LoadReport& report) {
  std::string out =
      absl::StrCat("calls: ", report.calls, "\n", "ok: ", report.ok(), "\n");
  for (const auto& [code, n] : report.by_code) {
    absl::StrAppend(&out, "code.", absl::StatusCodeToString(code), ": ", n,
                    "\n");
  }
  for (const auto& [code, message] : report.first_error) {
    absl::StrAppend(&out, "error.", absl::StatusCodeToString(code), ": ",
                    message, "\n");
  }
  absl::StrAppend(
      &out, "mismatches: ", report.mismatches, "\n",
      absl::StrFormat("elapsed_s: %.3f\n", report.elapsed_seconds),
      absl::StrFormat("throughput_rps: %.1f\n", report.throughput()),
      absl::StrFormat("latency_p50_ms: %.3f\n",
                      report.LatencyQuantile(0.50) * 1e3),
      absl::StrFormat("latency_p90_ms: %.3f\n",
                      report.LatencyQuantile(0.90) * 1e3),
      absl::StrFormat("latency_p99_ms: %.3f\n",
                      report.LatencyQuantile(0.99) * 1e3),
      absl::StrFormat("latency_max_ms: %.3f\n",
                      report.LatencyQuantile(1.0) * 1e3));
  return out;
}

}  // namespace attnserve::attnload
