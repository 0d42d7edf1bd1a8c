#include "attnload/load_generator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <random>
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
  // (case, fingerprint) of each successful call, in order.
  std::vector<std::pair<size_t, uint64_t>> fingerprints;
  // (case, seconds) of each successful call.
  std::vector<std::pair<size_t, double>> ok_latencies;
  // Calls and codes by case.
  std::vector<int64_t> case_calls;
  std::vector<std::map<absl::StatusCode, int64_t>> case_codes;
};

uint64_t TensorHash(const v1::Tensor& tensor) {
  return absl::HashOf(
      static_cast<int>(tensor.dtype()),
      std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()),
      tensor.data());
}

int64_t OkOf(const std::map<absl::StatusCode, int64_t>& by_code) {
  const auto it = by_code.find(absl::StatusCode::kOk);
  return it == by_code.end() ? 0 : it->second;
}

}  // namespace

int64_t LoadReport::ok() const { return OkOf(by_code); }

int64_t CaseReport::ok() const { return OkOf(by_code); }

double LoadReport::throughput() const {
  return elapsed_seconds > 0 ? static_cast<double>(ok()) / elapsed_seconds
                             : 0.0;
}

double Quantile(const std::vector<double>& latencies, double q) {
  if (latencies.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(latencies.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return latencies[std::min(index, latencies.size() - 1)];
}

double LoadReport::LatencyQuantile(double q) const {
  return Quantile(ok_latencies, q);
}

uint64_t Fingerprint(const v1::FlashAttentionScoreResponse& response) {
  return absl::HashOf(TensorHash(response.attention_out()),
                      TensorHash(response.softmax_max()),
                      TensorHash(response.softmax_sum()));
}

uint64_t Fingerprint(const v1::FlashAttentionScoreGradResponse& response) {
  return absl::HashOf(TensorHash(response.dq()), TensorHash(response.dk()),
                      TensorHash(response.dv()), TensorHash(response.dpse()));
}

uint64_t Fingerprint(const v1::NsaSelectedAttentionResponse& response) {
  return absl::HashOf(TensorHash(response.attention_out()),
                      TensorHash(response.softmax_max()),
                      TensorHash(response.softmax_sum()));
}

uint64_t Fingerprint(const v1::NsaSelectedAttentionGradResponse& response) {
  return absl::HashOf(TensorHash(response.dq()), TensorHash(response.dk()),
                      TensorHash(response.dv()));
}

LoadReport RunLoad(const LoadOptions& options, const CallFn& call) {
  LoadReport report = RunMixedLoad(
      options, {""},
      [&](size_t, absl::Duration timeout) { return call(timeout); });
  report.cases.clear();
  return report;
}

LoadReport RunMixedLoad(const LoadOptions& options,
                        const std::vector<std::string>& case_names,
                        const CaseCallFn& call) {
  const size_t cases = std::max<size_t>(1, case_names.size());
  const int callers = std::max(1, options.concurrency);
  std::vector<CallerTally> tallies(static_cast<size_t>(callers));
  const absl::Time start = absl::Now();
  const absl::Time stop = start + options.duration;
  std::atomic<int64_t> started{0};
  const auto another_call = [&] {
    return absl::Now() < stop &&
           (options.max_calls <= 0 || started.fetch_add(1) < options.max_calls);
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(callers));
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i] {
      CallerTally& tally = tallies[static_cast<size_t>(i)];
      tally.case_calls.assign(cases, 0);
      tally.case_codes.resize(cases);
      std::mt19937_64 gen(absl::HashOf(options.mix_seed, i));
      std::uniform_int_distribution<size_t> pick(0, cases - 1);
      while (another_call()) {
        const size_t c = pick(gen);
        const absl::Time begin = absl::Now();
        absl::StatusOr<uint64_t> result = call(c, options.timeout);
        const double seconds = absl::ToDoubleSeconds(absl::Now() - begin);
        ++tally.calls;
        ++tally.case_calls[c];
        const absl::StatusCode code = result.status().code();
        ++tally.by_code[code];
        ++tally.case_codes[c][code];
        if (result.ok()) {
          tally.fingerprints.emplace_back(c, *result);
          tally.ok_latencies.emplace_back(c, seconds);
        } else if (tally.first_error.count(code) == 0) {
          tally.first_error[code] = std::string(result.status().message());
        }
        if (code == absl::StatusCode::kResourceExhausted) {
          absl::SleepFor(options.refused_backoff);
        }
        if (options.pause > absl::ZeroDuration()) {
          absl::SleepFor(options.pause);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  LoadReport report;
  report.elapsed_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  report.cases.resize(cases);
  for (size_t c = 0; c < case_names.size(); ++c) {
    report.cases[c].name = case_names[c];
  }
  std::vector<std::optional<uint64_t>> reference(cases);
  for (const CallerTally& tally : tallies) {
    report.calls += tally.calls;
    for (const auto& [code, n] : tally.by_code) report.by_code[code] += n;
    for (const auto& [code, message] : tally.first_error) {
      report.first_error.emplace(code, message);
    }
    for (size_t c = 0; c < cases; ++c) {
      report.cases[c].calls += tally.case_calls[c];
      for (const auto& [code, n] : tally.case_codes[c]) {
        report.cases[c].by_code[code] += n;
      }
    }
    for (const auto& [c, fingerprint] : tally.fingerprints) {
      if (!reference[c]) reference[c] = fingerprint;
      if (fingerprint != *reference[c]) {
        ++report.mismatches;
        ++report.cases[c].mismatches;
      }
    }
    for (const auto& [c, seconds] : tally.ok_latencies) {
      report.ok_latencies.push_back(seconds);
      report.cases[c].ok_latencies.push_back(seconds);
    }
  }
  std::sort(report.ok_latencies.begin(), report.ok_latencies.end());
  for (CaseReport& c : report.cases) {
    std::sort(c.ok_latencies.begin(), c.ok_latencies.end());
  }
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
  for (size_t i = 0; i < report.cases.size(); ++i) {
    const CaseReport& c = report.cases[i];
    const std::string key = absl::StrCat("case.", i);
    absl::StrAppend(&out, key, ": ", c.name, "\n", key, ".calls: ", c.calls,
                    "\n", key, ".ok: ", c.ok(), "\n", key,
                    ".mismatches: ", c.mismatches, "\n");
    for (const auto& [code, n] : c.by_code) {
      if (code == absl::StatusCode::kOk) continue;
      absl::StrAppend(&out, key, ".code.", absl::StatusCodeToString(code), ": ",
                      n, "\n");
    }
    absl::StrAppend(&out,
                    absl::StrFormat("%s.latency_p50_ms: %.3f\n", key,
                                    Quantile(c.ok_latencies, 0.50) * 1e3),
                    absl::StrFormat("%s.latency_p99_ms: %.3f\n", key,
                                    Quantile(c.ok_latencies, 0.99) * 1e3));
  }
  return out;
}

}  // namespace attnserve::attnload
