// Turning a gRPC status from attnserve into an absl::Status without losing the
// structured error details.
//
// attnserve rejects bad requests with INVALID_ARGUMENT plus a google.rpc.Status
// in the `grpc-status-details-bin` trailer that holds google.rpc.BadRequest
// field violations. FromGrpcStatus keeps the code and message, attaches the
// serialized google.rpc.Status as a payload, and FieldViolations reads them
// back:
//
//   absl::Status s = FromGrpcStatus(grpc_status);
//   for (const FieldViolation& v : FieldViolations(s)) {
//     std::cerr << v.field << ": " << v.description << "\n";
//   }
#ifndef ATTNSERVE_CLIENT_STATUS_CONVERSION_H_
#define ATTNSERVE_CLIENT_STATUS_CONVERSION_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace attnserve {

// Payload type URL under which FromGrpcStatus stores the serialized
// google.rpc.Status details of an error.
inline constexpr absl::string_view kRpcStatusPayloadUrl =
    "type.googleapis.com/google.rpc.Status";

// One google.rpc.BadRequest.FieldViolation.
struct FieldViolation {
  // Path of the offending request field, e.g. "key.shape[1]".
  std::string field;
  // The broken rule, e.g. "must divide query heads 12, got 5".
  std::string description;
};

// Returns an absl::Status with the same canonical code (gRPC and absl share the
// numbering) and message as `status`; OK maps to OK. If `status` carries
// error details (a serialized google.rpc.Status), they are attached under
// kRpcStatusPayloadUrl, and every field violation whose field path does not
// already appear in the message is appended to it as " [field: <path>]", so
// that a printed status always names the field. Thread-safe.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The google.rpc.BadRequest field violations attached by FromGrpcStatus, in
// order; empty if there are none or the payload cannot be parsed. Thread-safe.
std::vector<FieldViolation> FieldViolations(const absl::Status& status);

}  // namespace attnserve

#endif  // ATTNSERVE_CLIENT_STATUS_CONVERSION_H_
