#include "attnctl/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "attnserve/client/status_conversion.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/wire/tensor_fields.h"

namespace attnserve::attnctl {

std::string TensorLine(absl::string_view name, const v1::Tensor& tensor) {
  std::string line =
      absl::StrCat(name, ": shape=[", absl::StrJoin(tensor.shape(), ","),
                   "] dtype=", DataTypeName(tensor.dtype()));
  if (!tensor.handle().empty() && tensor.data().empty()) {
    // Left on the server (outputs_by_handle): fetch it with `attnctl get`.
    absl::StrAppend(&line, " handle=", tensor.handle());
    return line;
  }
  absl::StatusOr<std::vector<float>> values = TensorToFloats(tensor);
  if (!values.ok()) {
    absl::StrAppend(&line, " error=", values.status().message());
    return line;
  }
  double sum = 0.0;
  double abs_sum = 0.0;
  for (float v : *values) {
    sum += v;
    abs_sum += std::fabs(v);
  }
  absl::StrAppendFormat(&line, " sum=%.9g abs_sum=%.9g", sum, abs_sum);
  return line;
}

void PrintOutputs(const google::protobuf::Message& response,
                  std::ostream& out) {
  wire::ForEachTensorField(response,
                           [&](const google::protobuf::FieldDescriptor& field,
                               const v1::Tensor& tensor) {
                             out << TensorLine(field.name(), tensor) << "\n";
                           });
}

double Gflops(const v1::ExecutionStats& stats) {
  if (stats.compute_seconds() <= 0.0) return 0.0;
  return stats.flops() / stats.compute_seconds() / 1e9;
}

std::string TimingFields(const CallTiming& timing) {
  return absl::StrFormat(
      "round_trip_s=%.6f compute_s=%.6f queue_s=%.6f gflops=%.3f",
      absl::ToDoubleSeconds(timing.round_trip), timing.stats.compute_seconds(),
      timing.stats.queue_seconds(), Gflops(timing.stats));
}

std::string RunLine(int index, int count, const CallTiming& timing) {
  return absl::StrFormat("run %d/%d: %s", index, count, TimingFields(timing));
}

void PrintSummary(const std::vector<CallTiming>& timings, std::ostream& out) {
  double compute = 0.0;
  double queue = 0.0;
  double round_trip = 0.0;
  double best = 0.0;
  for (const CallTiming& t : timings) {
    compute += t.stats.compute_seconds();
    queue += t.stats.queue_seconds();
    round_trip += absl::ToDoubleSeconds(t.round_trip);
    best = std::max(best, Gflops(t.stats));
  }
  const double n = static_cast<double>(timings.size());
  v1::ExecutionStats mean = timings.back().stats;
  mean.set_compute_seconds(compute / n);
  mean.set_queue_seconds(queue / n);
  out << "workspace_bytes: " << mean.workspace_bytes() << "\n"
      << absl::StrFormat("flops: %.17g\n", mean.flops())
      << absl::StrFormat("compute_s: %.6f\n", mean.compute_seconds())
      << absl::StrFormat("queue_s: %.6f\n", mean.queue_seconds())
      << absl::StrFormat("round_trip_s: %.6f\n", round_trip / n)
      << absl::StrFormat("gflops: %.3f\n", Gflops(mean))
      << absl::StrFormat("best_gflops: %.3f\n", best);
}

void PrintServerInfo(const v1::GetServerInfoResponse& info, std::ostream& out) {
  std::vector<std::string> dtypes;
  for (int d : info.dtypes()) dtypes.push_back(DataTypeName(d));
  out << "version: " << info.version() << "\n"
      << "operators: " << absl::StrJoin(info.operators(), ",") << "\n"
      << "dtypes: " << absl::StrJoin(dtypes, ",") << "\n"
      << "layouts: " << absl::StrJoin(info.layouts(), ",") << "\n"
      << "worker_count: " << info.worker_count() << "\n"
      << "max_message_bytes: " << info.max_message_bytes() << "\n"
      << "queue_depth: " << info.queue_depth() << "\n"
      << "memory_budget_bytes: " << info.memory_budget_bytes()
      << (info.memory_budget_bytes() == 0 ? " (unlimited)" : "") << "\n"
      << "compute_backends: " << absl::StrJoin(info.compute_backends(), ",")
      << "\n";
}

void PrintError(const absl::Status& status, std::ostream& err) {
  err << "error: " << absl::StatusCodeToString(status.code()) << ": "
      << status.message() << "\n";
  for (const FieldViolation& v : FieldViolations(status)) {
    err << "  field_violation: " << v.field << ": " << v.description << "\n";
  }
}

}  // namespace attnserve::attnctl
