#include "server/request_log.h"

#include <algorithm>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/logging.h"
#include "spdlog/spdlog.h"

namespace attnserve::server {
namespace {

absl::Mutex g_observers_mu;
std::vector<RequestObserver*>& Observers()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_observers_mu) {
  static auto* observers = new std::vector<RequestObserver*>();
  return *observers;
}

double Gflops(const RequestRecord& record) {
  return record.compute_seconds > 0
             ? record.flops / record.compute_seconds / 1e9
             : 0.0;
}

}  // namespace

void SetOutcome(const absl::Status& status, RequestRecord* record) {
  record->code = status.code();
  record->error = std::string(status.message());
}

void AddRequestObserver(RequestObserver* observer) {
  absl::MutexLock lock(&g_observers_mu);
  Observers().push_back(observer);
}

void RemoveRequestObserver(RequestObserver* observer) {
  absl::MutexLock lock(&g_observers_mu);
  std::vector<RequestObserver*>& observers = Observers();
  observers.erase(std::remove(observers.begin(), observers.end(), observer),
                  observers.end());
}

std::string FormatRequestLine(const RequestRecord& record) {
  std::string line = record.op;
  if (!record.request_id.empty()) {
    absl::StrAppend(&line, " request_id=", record.request_id);
  }
  absl::StrAppend(
      &line,
      absl::StrFormat(
          " q=%s k=%s v=%s dtype=%s layout=%s status=%s queue_ms=%.3f "
          "compute_ms=%.3f gflops=%.2f",
          record.q_shape, record.k_shape, record.v_shape, record.dtype,
          record.layout.empty() ? "-" : record.layout,
          absl::StatusCodeToString(record.code), record.queue_seconds * 1e3,
          record.compute_seconds * 1e3, Gflops(record)));
  if (record.scheduled) {
    absl::StrAppend(&line, record.large ? " lane=large" : " lane=small");
  }
  if (record.cancel_to_free_seconds >= 0) {
    absl::StrAppend(&line,
                    absl::StrFormat(" cancel_to_free_ms=%.3f",
                                    record.cancel_to_free_seconds * 1e3));
  }
  if (record.code != absl::StatusCode::kOk && !record.error.empty()) {
    absl::StrAppend(&line, " error=\"", record.error, "\"");
  }
  return line;
}

std::string FormatRequestJsonFields(const RequestRecord& record) {
  std::string fields = absl::StrFormat(
      "\"request_id\":\"%s\",\"op\":\"%s\",\"q\":\"%s\",\"k\":\"%s\","
      "\"v\":\"%s\",\"dtype\":\"%s\",\"layout\":\"%s\",\"status\":\"%s\","
      "\"queue_ms\":%.3f,\"compute_ms\":%.3f,\"flops\":%.6g,\"gflops\":%.2f",
      JsonEscape(record.request_id), JsonEscape(record.op),
      JsonEscape(record.q_shape), JsonEscape(record.k_shape),
      JsonEscape(record.v_shape), JsonEscape(record.dtype),
      JsonEscape(record.layout), absl::StatusCodeToString(record.code),
      record.queue_seconds * 1e3, record.compute_seconds * 1e3, record.flops,
      Gflops(record));
  if (record.scheduled) {
    absl::StrAppend(&fields, ",\"lane\":\"", record.large ? "large" : "small",
                    "\"");
  }
  if (record.cancel_to_free_seconds >= 0) {
    absl::StrAppend(&fields,
                    absl::StrFormat(",\"cancel_to_free_ms\":%.3f",
                                    record.cancel_to_free_seconds * 1e3));
  }
  if (record.code != absl::StatusCode::kOk && !record.error.empty()) {
    absl::StrAppend(&fields, ",\"error\":\"", JsonEscape(record.error), "\"");
  }
  return fields;
}

void LogRequest(const RequestRecord& record) {
  const spdlog::level::level_enum level = record.code == absl::StatusCode::kOk
                                              ? spdlog::level::info
                                              : spdlog::level::warn;
  const std::shared_ptr<spdlog::logger> logger = RequestLogger();
  if (logger->should_log(level)) {
    logger->log(level, CurrentLogFormat() == LogFormat::kJson
                           ? FormatRequestJsonFields(record)
                           : FormatRequestLine(record));
  }
  absl::MutexLock lock(&g_observers_mu);
  for (RequestObserver* observer : Observers()) observer->OnRequest(record);
}

}  // namespace attnserve::server
