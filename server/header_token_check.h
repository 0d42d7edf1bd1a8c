// Checks bearer tokens on a TLS port when a call's headers arrive, before
// its request body is read.
//
//   credentials->SetAuthMetadataProcessor(
//       std::make_shared<HeaderTokenCheck>(token_auth));
//
// gRPC runs the processor on the call's initial metadata; a call to an
// AttentionService RPC without a token that grants it ends there with
// UNAUTHENTICATED or PERMISSION_DENIED, so an unauthenticated client cannot
// make the server receive and parse a large message. Other services (health)
// pass. The handlers still check the token (CallGuard) — this is the early
// refusal, not the only one. gRPC offers the hook on TLS credentials only:
// a plaintext port reads the body first (the start-up log says so).
#ifndef ATTNSERVE_SERVER_HEADER_TOKEN_CHECK_H_
#define ATTNSERVE_SERVER_HEADER_TOKEN_CHECK_H_

#include <memory>

#include "grpcpp/security/auth_metadata_processor.h"
#include "server/token_auth.h"

namespace attnserve::server {

class HeaderTokenCheck final : public grpc::AuthMetadataProcessor {
 public:
  explicit HeaderTokenCheck(std::shared_ptr<const TokenAuth> auth)
      : auth_(std::move(auth)) {}

  // Cheap (a SHA-256 and a comparison per known token): runs on gRPC's
  // thread without blocking it.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  std::shared_ptr<const TokenAuth> auth_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_HEADER_TOKEN_CHECK_H_
