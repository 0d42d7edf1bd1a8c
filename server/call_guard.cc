#include "server/call_guard.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "openssl/sha.h"
#include "server/request_limits.h"

namespace attnserve::server {
namespace {

std::string Sha256Hex(absl::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

}  // namespace

std::string CallGuard::Owner(const grpc::ServerContextBase& context) const {
  std::string owner;
  if (options_.auth != nullptr) {
    const auto& metadata = context.client_metadata();
    const auto it = metadata.find("authorization");
    if (it != metadata.end()) {
      // The token as TokenAuth reads it: after the (case-insensitive)
      // scheme, without surrounding white space.
      absl::string_view value(it->second.data(), it->second.size());
      if (value.size() >= 7) value = value.substr(7);
      absl::StrAppend(&owner,
                      "token:", Sha256Hex(absl::StripAsciiWhitespace(value)));
    }
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& pem :
         auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
      absl::StrAppend(&owner, owner.empty() ? "" : "/", "cert:",
                      Sha256Hex(absl::string_view(pem.data(), pem.size())));
    }
  }
  return owner;
}

absl::Status CallGuard::Admit(const grpc::CallbackServerContext& context,
                              absl::string_view method,
                              const google::protobuf::Message& request) const {
  if (absl::Status s = AdmitHeaders(context, method); !s.ok()) return s;
  return AdmitRequest(request);
}

absl::Status CallGuard::AdmitHeaders(const grpc::CallbackServerContext& context,
                                     absl::string_view method) const {
  if (options_.auth != nullptr) {
    if (absl::Status s =
            options_.auth->Check(context.client_metadata(), method);
        !s.ok()) {
      return s;
    }
  }
  if (draining_) {
    return absl::UnavailableError(
        "server is draining for shutdown; retry on another instance");
  }
  return absl::OkStatus();
}

absl::Status CallGuard::AdmitRequest(
    const google::protobuf::Message& request) const {
  return CheckTensorLimits(request, options_.max_tensor_elements);
}

}  // namespace attnserve::server
