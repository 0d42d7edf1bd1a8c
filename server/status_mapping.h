// The one place where an absl::Status becomes a grpc::Status.
//
// Codes map one to one (abseil's canonical codes carry gRPC's numbers). An
// INVALID_ARGUMENT status additionally carries a google.rpc.Status holding a
// google.rpc.BadRequest whose field violation names the offending field (the
// path the core attached, see core::FieldOf) and repeats the message. gRPC
// sends those bytes to the client as `grpc-status-details-bin`:
//
//   grpc::Status s = ToGrpcStatus(core::InvalidField("key.dtype", "..."));
//   // s.error_code() == grpc::INVALID_ARGUMENT
//   // s.error_details(): serialized google.rpc.Status
#ifndef ATTNSERVE_SERVER_STATUS_MAPPING_H_
#define ATTNSERVE_SERVER_STATUS_MAPPING_H_

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/support/status.h"

namespace attnserve::server {

// The gRPC form of `status`. OK maps to grpc::Status::OK. Thread-safe.
grpc::Status ToGrpcStatus(const absl::Status& status);

// `status` with its field path nested under `prefix`: an INVALID_ARGUMENT
// about "query.data" becomes one about "flash_attention_score.query.data"
// (message included). Other statuses are returned unchanged. Used where an
// operator request is embedded in another message (GetWorkspaceSize).
absl::Status NestField(const absl::Status& status, absl::string_view prefix);

// The google.rpc.BadRequest carried in `status`'s binary error details, or
// nullopt when there is none (or the details do not parse). Used by clients
// and tests to read field violations back. Thread-safe.
std::optional<google::rpc::BadRequest> BadRequestOf(const grpc::Status& status);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_STATUS_MAPPING_H_
