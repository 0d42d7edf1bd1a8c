// A closed-loop load generator: N callers, each with one call in flight at a
// time, repeat the same request against a server for a fixed time.
//
//   LoadOptions options;
//   options.concurrency = 16;
//   options.duration = absl::Seconds(10);
//   LoadReport report = RunLoad(
//       options, [&](absl::Duration timeout) {
//         return Fingerprint(client.FlashAttentionScore(request, timeout));
//       });
//   std::cout << FormatReport(report);
//
// Every successful response's fingerprint (a hash of its outputs) is
// compared with the first one: the same request must always get the same
// answer, so a difference means a race or corruption under load.
//
// A mixed load (RunMixedLoad) has several cases, e.g. different operators,
// shapes and dtypes: each caller picks the case of its next call at random
// (its own stream, seeded from LoadOptions::mix_seed), fingerprints are
// compared within a case, and the report counts each case apart too.
#ifndef ATTNSERVE_CLIENT_ATTNLOAD_LOAD_GENERATOR_H_
#define ATTNSERVE_CLIENT_ATTNLOAD_LOAD_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnload {

struct LoadOptions {
  // Callers, each with one call in flight.
  int concurrency = 4;
  // How long callers keep starting calls (calls in flight then finish).
  absl::Duration duration = absl::Seconds(10);
  // Calls started in all, at most; 0 = as many as `duration` allows.
  int64_t max_calls = 0;
  // Deadline of each call.
  absl::Duration timeout = absl::Seconds(30);
  // Pause of a caller after a RESOURCE_EXHAUSTED answer (the server is
  // full), as a polite client backs off before retrying.
  absl::Duration refused_backoff = absl::Milliseconds(5);
  // Pause of a caller after every answer (think time): with it the load is
  // concurrency / (latency + pause) calls per second at most, less than the
  // server can do, instead of all it can do.
  absl::Duration pause = absl::ZeroDuration();
  // Seeds the callers' choice of case in a mixed load.
  uint64_t mix_seed = 1;
};

// One call: the outputs' fingerprint, or the call's error.
using CallFn = std::function<absl::StatusOr<uint64_t>(absl::Duration timeout)>;
// One call of case `index` of a mixed load.
using CaseCallFn = std::function<absl::StatusOr<uint64_t>(
    size_t index, absl::Duration timeout)>;

// The calls of one case of a mixed load.
struct CaseReport {
  std::string name;
  int64_t calls = 0;
  std::map<absl::StatusCode, int64_t> by_code;
  // Successful responses whose fingerprint differs from the case's first.
  int64_t mismatches = 0;
  // Round-trip seconds of the successful calls, ascending.
  std::vector<double> ok_latencies;

  int64_t ok() const;
};

struct LoadReport {
  int64_t calls = 0;
  // Calls by status code, OK included.
  std::map<absl::StatusCode, int64_t> by_code;
  // The first message seen for each failing code.
  std::map<absl::StatusCode, std::string> first_error;
  // Successful responses whose fingerprint differs from the first one.
  int64_t mismatches = 0;
  // Wall time from the first call to the last answer.
  double elapsed_seconds = 0;
  // Round-trip seconds of the successful calls, ascending.
  std::vector<double> ok_latencies;
  // Mixed load: each case's share (empty otherwise).
  std::vector<CaseReport> cases;

  int64_t ok() const;
  // Successful calls per second.
  double throughput() const;
  // The q-quantile (0..1) of ok_latencies (nearest rank); 0 when empty.
  double LatencyQuantile(double q) const;
};

// Runs `call` from `options.concurrency` threads until `options.duration`
// has passed. Thread-safe as long as `call` is.
LoadReport RunLoad(const LoadOptions& options, const CallFn& call);

// Runs a mixed load of `case_names.size()` cases (at least one): each call
// is `call(i, timeout)` for a case i drawn at random.
LoadReport RunMixedLoad(const LoadOptions& options,
                        const std::vector<std::string>& case_names,
                        const CaseCallFn& call);

// A hash of the response's output tensors (dtype, shape and bytes).
uint64_t Fingerprint(const v1::FlashAttentionScoreResponse& response);
uint64_t Fingerprint(const v1::FlashAttentionScoreGradResponse& response);
uint64_t Fingerprint(const v1::NsaSelectedAttentionResponse& response);
uint64_t Fingerprint(const v1::NsaSelectedAttentionGradResponse& response);

// The q-quantile (0..1) of ascending `latencies` (nearest rank); 0 when
// empty.
double Quantile(const std::vector<double>& latencies, double q);

// The report as `key: value` lines: calls, ok, code.<NAME> counts,
// error.<NAME> messages, mismatches, elapsed_s, throughput_rps,
// latency_{p50,p90,p99,max}_ms; for a mixed load then, per case i,
// case.<i>: its name, case.<i>.{calls,ok,mismatches}, case.<i>.code.<NAME>
// for the failing codes and case.<i>.latency_{p50,p99}_ms.
std::string FormatReport(const LoadReport& report);

}  // namespace attnserve::attnload

#endif  // ATTNSERVE_CLIENT_ATTNLOAD_LOAD_GENERATOR_H_
