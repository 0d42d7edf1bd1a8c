#include "attnserve/client/status_conversion.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace attnserve {
namespace {

std::vector<FieldViolation> ViolationsOf(const google::rpc::Status& details) {
  std::vector<FieldViolation> violations;
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::BadRequest bad_request;
    if (!any.Is<google::rpc::BadRequest>() || !any.UnpackTo(&bad_request)) {
      continue;
    }
    for (const auto& v : bad_request.field_violations()) {
      violations.push_back(FieldViolation{v.field(), v.description()});
    }
  }
  return violations;
}

std::optional<google::rpc::Status> ParseDetails(const std::string& bytes) {
  google::rpc::Status details;
  if (bytes.empty() || !details.ParseFromString(bytes)) return std::nullopt;
  return details;
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string message = status.error_message();
  const std::optional<google::rpc::Status> details =
      ParseDetails(status.error_details());
  if (details.has_value()) {
    for (const FieldViolation& v : ViolationsOf(*details)) {
      if (!v.field.empty() && message.find(v.field) == std::string::npos) {
        absl::StrAppend(&message, " [field: ", v.field, "]");
      }
    }
  }
  absl::Status result(code, message);
  if (details.has_value()) {
    result.SetPayload(kRpcStatusPayloadUrl, absl::Cord(status.error_details()));
  }
  return result;
}

std::vector<FieldViolation> FieldViolations(const absl::Status& status) {
  const absl::optional<absl::Cord> payload =
      status.GetPayload(kRpcStatusPayloadUrl);
  if (!payload.has_value()) return {};
  const std::optional<google::rpc::Status> details =
      ParseDetails(std::string(*payload));
  if (!details.has_value()) return {};
  return ViolationsOf(*details);
}

}  // namespace attnserve
