#include "server/header_token_check.h"

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/status_mapping.h"

namespace attnserve::server {
namespace {

constexpr absl::string_view kGuardedPrefix = "/attnserve.v1.AttentionService/";

absl::string_view View(const grpc::string_ref& ref) {
  return absl::string_view(ref.data(), ref.size());
}

}  // namespace

grpc::Status HeaderTokenCheck::Process(const InputMetadata& auth_metadata,
                                       grpc::AuthContext* /*context*/,
                                       OutputMetadata* /*consumed*/,
                                       OutputMetadata* /*response*/) {
  const auto path = auth_metadata.find(":path");
  if (path == auth_metadata.end()) return grpc::Status::OK;
  const absl::string_view method = View(path->second);
  if (!absl::StartsWith(method, kGuardedPrefix)) return grpc::Status::OK;
  return ToGrpcStatus(
      auth_->Check(auth_metadata, method.substr(kGuardedPrefix.size())));
}

}  // namespace attnserve::server
