// Bearer-token authentication for the attention RPCs.
//
// A token file holds one token per line, optionally followed by the RPCs
// that token may call (comma-separated); a line without a list grants every
// RPC. Blank lines and lines starting with '#' are ignored:
//
//   # ops team: everything
//   3c1f0d6e9b0a4e6f8e2f
//   # monitoring: read-only calls
//   7d2b55a0c41e  GetServerInfo,GetWorkspaceSize
//
// A call presents `authorization: Bearer <token>` metadata:
//
//   ATTN_ASSIGN_OR_RETURN(TokenAuth auth, TokenAuth::FromFile(path));
//   absl::Status s = auth.Check(context->client_metadata(), "GetServerInfo");
//
// Check() is UNAUTHENTICATED when the metadata is missing, is not a bearer
// token, or names no known token; PERMISSION_DENIED when the token is known
// but not granted that RPC. Tokens are kept only as SHA-256 digests and
// compared in constant time (the digest of the presented token against
// every stored digest, with no early exit). Immutable after construction, so
// thread-safe.
#ifndef ATTNSERVE_SERVER_TOKEN_AUTH_H_
#define ATTNSERVE_SERVER_TOKEN_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/string_ref.h"

namespace attnserve::server {

class TokenAuth {
 public:
  // Parses a token file's text. INVALID_ARGUMENT naming the line for a
  // malformed line (a token shorter than 16 characters, or with characters
  // outside printable ASCII) or when no token is given at all.
  static absl::StatusOr<TokenAuth> FromText(absl::string_view text);
  // Reads and parses `path`; NOT_FOUND / PERMISSION_DENIED from the file
  // system, otherwise as FromText.
  static absl::StatusOr<TokenAuth> FromFile(const std::string& path);

  // OK when `authorization` (the metadata value, e.g. "Bearer abc") grants
  // `method` (the RPC's short name, e.g. "FlashAttentionScore").
  absl::Status Check(absl::string_view authorization,
                     absl::string_view method) const;
  // The same, reading the `authorization` entry of a call's metadata.
  absl::Status Check(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
      absl::string_view method) const;

  int token_count() const { return static_cast<int>(grants_.size()); }

 private:
  using Digest = std::array<uint8_t, 32>;
  struct Grant {
    Digest digest;
    // RPC short names; empty = every RPC.
    std::vector<std::string> methods;
  };

  static Digest Sha256(absl::string_view text);

  std::vector<Grant> grants_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_TOKEN_AUTH_H_
