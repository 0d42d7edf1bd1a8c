// The flags that say how attnctl and attnload reach a server: --target,
// TLS, bearer token and call metadata, defined once for both tools.
//
//   ATTN_ASSIGN_OR_RETURN(ClientOptions options, ClientOptionsFromFlags());
//   options.default_timeout = absl::GetFlag(FLAGS_timeout);
//   ATTN_ASSIGN_OR_RETURN(Client client,
//                         Client::Connect(TargetFromFlags(), options));
#ifndef ATTNSERVE_CLIENT_ATTNCTL_CONNECTION_FLAGS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_CONNECTION_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "attnserve/client/client.h"

namespace attnserve::attnctl {

// --target.
std::string TargetFromFlags();

// Client options from --metadata, --tls, --tls_ca, --tls_cert, --tls_key,
// --tls_server_name and --token_file (the default timeout is left to the
// tool). INVALID_ARGUMENT naming the flag for a malformed --metadata pair,
// unreadable TLS files or an unreadable or empty token file.
absl::StatusOr<ClientOptions> ClientOptionsFromFlags();

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_CONNECTION_FLAGS_H_
