// One log line per request: what was asked, how it ended, how long it took.
//
//   RequestRecord record = RecordOf("FlashAttentionScore", request);
//   record.request_id = "3f2a9c";
//   record.code = absl::StatusCode::kOk;
//   record.queue_seconds = 0.0012;
//   record.compute_seconds = 0.034;
//   record.flops = 4.3e9;
//   LogRequest(record);
//   // FlashAttentionScore request_id=3f2a9c q=[2,128,8,64] k=[2,128,8,64]
//   //   v=[2,128,8,64] dtype=FLOAT16 layout=BSND status=OK queue_ms=1.200
//   //   compute_ms=34.000 gflops=126.47
//
// A request that went through the scheduler also shows its lane
// (" lane=small" or " lane=large") after the timings.
//
// Written through the spdlog logger named "request" (info for OK, warn
// otherwise); with --log_format=json the record becomes one JSON object (see
// logging.h). Every record also goes to the registered RequestObservers (the
// metrics). Thread-safe.
#ifndef ATTNSERVE_SERVER_REQUEST_LOG_H_
#define ATTNSERVE_SERVER_REQUEST_LOG_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/tensor.h"

namespace attnserve::server {

struct RequestRecord {
  std::string op;  // RPC name, e.g. "FlashAttentionScoreGrad".
  // The call's x-request-id (received or generated); empty outside a call.
  std::string request_id;
  std::string q_shape, k_shape, v_shape;
  std::string dtype;   // Query dtype without prefix, e.g. "FLOAT32".
  std::string layout;  // input_layout as sent.
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error;  // Status message when `code` is not OK.
  // True once the request went through the scheduler (queued, then run or
  // stopped); queue_seconds and compute_seconds are meaningful only then.
  bool scheduled = false;
  // True when it waited in the large-request lane (scheduler.h).
  bool large = false;
  double queue_seconds = 0;
  double compute_seconds = 0;
  double flops = 0;
  // For a call stopped by its client or deadline while queued or running:
  // seconds from the cancellation (or the deadline) until its worker was
  // free again; negative when not applicable.
  double cancel_to_free_seconds = -1;
};

// Receives every record LogRequest writes. Implementations must be
// thread-safe and quick (they run on gRPC and worker threads).
class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  virtual void OnRequest(const RequestRecord& record) = 0;
};

// Registers / unregisters an observer of every LogRequest call in this
// process (the observer must stay alive until removed). Thread-safe.
void AddRequestObserver(RequestObserver* observer);
void RemoveRequestObserver(RequestObserver* observer);

// A request tensor's shape for the log: "[2,128,8,64]", or "handle" for a
// tensor sent by handle without its shape.
inline std::string LoggedShape(const v1::Tensor& tensor) {
  if (!tensor.handle().empty() && tensor.shape_size() == 0) return "handle";
  return wire::ShapeString(tensor);
}

// The request-describing part of a record (status and timings left zero).
// `Request` is any operator request with query/key/value/input_layout.
template <typename Request>
RequestRecord RecordOf(std::string_view op, const Request& request) {
  RequestRecord record;
  record.op = std::string(op);
  record.q_shape = LoggedShape(request.query());
  record.k_shape = LoggedShape(request.key());
  record.v_shape = LoggedShape(request.value());
  record.dtype = wire::DataTypeName(request.query().dtype());
  record.layout = request.input_layout();
  return record;
}

// Sets `code` and `error` from `status`.
void SetOutcome(const absl::Status& status, RequestRecord* record);

// The text log line for `record` (no trailing newline).
std::string FormatRequestLine(const RequestRecord& record);

// The record as the members of a JSON object, without the braces:
// "request_id":"3f2a9c","op":"FlashAttentionScore",...,"status":"OK",...
std::string FormatRequestJsonFields(const RequestRecord& record);

// Writes the record to the "request" logger (text or JSON as configured) and
// hands it to every RequestObserver.
void LogRequest(const RequestRecord& record);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_REQUEST_LOG_H_
