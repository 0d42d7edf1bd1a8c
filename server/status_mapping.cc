#include "server/status_mapping.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "attnserve/core/status_macros.h"
#include "google/rpc/status.pb.h"

namespace attnserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return grpc::Status(code, std::move(message));
  }
  google::rpc::BadRequest bad_request;
  google::rpc::BadRequest::FieldViolation* violation =
      bad_request.add_field_violations();
  const std::string field = core::FieldOf(status).value_or("");
  violation->set_field(field);
  // The description is the rule alone: the field has its own slot.
  absl::string_view rule = message;
  if (!field.empty()) absl::ConsumePrefix(&rule, absl::StrCat(field, ": "));
  violation->set_description(std::string(rule));

  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(status.code()));
  details.set_message(message);
  details.add_details()->PackFrom(bad_request);
  return grpc::Status(code, std::move(message), details.SerializeAsString());
}

absl::Status NestField(const absl::Status& status, absl::string_view prefix) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  std::optional<std::string> field = core::FieldOf(status);
  if (!field.has_value()) return status;
  // Messages from core::InvalidField read "<field>: <rule>".
  absl::string_view rule = status.message();
  absl::ConsumePrefix(&rule, absl::StrCat(*field, ": "));
  return core::InvalidField(absl::StrCat(prefix, ".", *field), rule);
}

std::optional<google::rpc::BadRequest> BadRequestOf(
    const grpc::Status& status) {
  if (status.error_details().empty()) return std::nullopt;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return std::nullopt;
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::BadRequest bad_request;
    if (any.Is<google::rpc::BadRequest>() && any.UnpackTo(&bad_request)) {
      return bad_request;
    }
  }
  return std::nullopt;
}

}  // namespace attnserve::server
