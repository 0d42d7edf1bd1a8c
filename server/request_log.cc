#include "server/request_log.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "spdlog/spdlog.h"

namespace attnserve::server {

std::string DTypeLabel(int proto_dtype) {
  if (!v1::DataType_IsValid(proto_dtype)) return absl::StrCat("?", proto_dtype);
  return std::string(absl::StripPrefix(
      v1::DataType_Name(static_cast<v1::DataType>(proto_dtype)), "DATA_TYPE_"));
}

void SetOutcome(const absl::Status& status, RequestRecord* record) {
  record->code = status.code();
  record->error = std::string(status.message());
}

std::string FormatRequestLine(const RequestRecord& record) {
  const double gflops = record.compute_seconds > 0
                            ? record.flops / record.compute_seconds / 1e9
                            : 0.0;
  std::string line = absl::StrFormat(
      "%s q=%s k=%s v=%s dtype=%s layout=%s status=%s queue_ms=%.3f "
      "compute_ms=%.3f gflops=%.2f",
      record.op, record.q_shape, record.k_shape, record.v_shape, record.dtype,
      record.layout.empty() ? "-" : record.layout,
      absl::StatusCodeToString(record.code), record.queue_seconds * 1e3,
      record.compute_seconds * 1e3, gflops);
  if (record.code != absl::StatusCode::kOk && !record.error.empty()) {
    absl::StrAppend(&line, " error=\"", record.error, "\"");
  }
  return line;
}

void LogRequest(const RequestRecord& record) {
  if (record.code == absl::StatusCode::kOk) {
    spdlog::info(FormatRequestLine(record));
  } else {
    spdlog::warn(FormatRequestLine(record));
  }
}

}  // namespace attnserve::server
