#include "attnserve/core/status_macros.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace attnserve::core {
namespace {

absl::Status WithField(absl::StatusCode code, absl::string_view field,
                       absl::string_view rule) {
  absl::Status status(code, absl::StrCat(field, ": ", rule));
  status.SetPayload(kFieldPayloadUrl, absl::Cord(field));
  return status;
}

}  // namespace

absl::Status InvalidField(absl::string_view field, absl::string_view rule) {
  return WithField(absl::StatusCode::kInvalidArgument, field, rule);
}

absl::Status UnimplementedField(absl::string_view field,
                                absl::string_view what) {
  return WithField(absl::StatusCode::kUnimplemented, field, what);
}

std::optional<std::string> FieldOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kFieldPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

}  // namespace attnserve::core
