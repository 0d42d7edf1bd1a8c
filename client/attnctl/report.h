// What attnctl prints: one "key: value" line per fact, so that people and
// scripts can both read it.
//
//   attention_out: shape=[1,8,1024,128] dtype=BFLOAT16 sum=1.25 abs_sum=4.2e+05
//   compute_s: 0.0412
//   gflops: 52.1
#ifndef ATTNSERVE_CLIENT_ATTNCTL_REPORT_H_
#define ATTNSERVE_CLIENT_ATTNCTL_REPORT_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attnserve/v1/attention.pb.h"
#include "google/protobuf/message.h"

namespace attnserve::attnctl {

// Figures of one call: the server's ExecutionStats and the client-side
// round-trip time.
struct CallTiming {
  v1::ExecutionStats stats;
  absl::Duration round_trip;
};

// "<name>: shape=[..] dtype=.. sum=.. abs_sum=.." where the sums run over the
// elements widened to fp32 and are accumulated in double; for a tensor that
// cannot be decoded the sums are replaced by "error=<message>"; a tensor
// returned by handle only has "handle=<handle>" instead.
std::string TensorLine(absl::string_view name, const v1::Tensor& tensor);

// TensorLine for every tensor field set in `response`, in field order
// (attention_out, softmax_max, softmax_sum; dq, dk, dv, dpse).
void PrintOutputs(const google::protobuf::Message& response, std::ostream& out);

// flops / compute_seconds / 1e9, or 0 when compute_seconds is 0.
double Gflops(const v1::ExecutionStats& stats);

// "round_trip_s=.. compute_s=.. queue_s=.. gflops=..".
std::string TimingFields(const CallTiming& timing);

// "run <i>/<n>: " + TimingFields(timing).
std::string RunLine(int index, int count, const CallTiming& timing);

// The summary block over all runs: workspace_bytes, flops, compute_s,
// queue_s and round_trip_s (means), gflops (from the mean compute time) and
// best_gflops. `timings` must not be empty.
void PrintSummary(const std::vector<CallTiming>& timings, std::ostream& out);

// GetServerInfo as "key: value" lines.
void PrintServerInfo(const v1::GetServerInfoResponse& info, std::ostream& out);

// "error: <CODE>: <message>" followed by one
// "  field_violation: <field>: <description>" line per BadRequest violation.
void PrintError(const absl::Status& status, std::ostream& err);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_REPORT_H_
