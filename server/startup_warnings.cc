#include "server/startup_warnings.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace attnserve::server {

bool IsLoopbackAddress(const std::string& listen_address) {
  absl::string_view a = listen_address;
  if (absl::StartsWith(a, "unix:") || absl::StartsWith(a, "unix-abstract:")) {
    return true;
  }
  // The host: "[v6]:port", or everything before the last ':'.
  absl::string_view host = a;
  if (absl::StartsWith(a, "[")) {
    const size_t close = a.find(']');
    if (close == absl::string_view::npos) return false;
    host = a.substr(1, close - 1);
  } else if (const size_t colon = a.rfind(':');
             colon != absl::string_view::npos) {
    host = a.substr(0, colon);
  }
  return host == "::1" || absl::EqualsIgnoreCase(host, "localhost") ||
         absl::StartsWith(host, "127.");
}

std::vector<std::string> StartupWarnings(const ServerOptions& options) {
  std::vector<std::string> warnings;
  const std::string& address = options.listen_address;
  if (!IsLoopbackAddress(address)) {
    const bool tls = !options.tls_cert_file.empty();
    const bool tokens = !options.auth_token_file.empty();
    const bool client_certs = !options.tls_client_ca_file.empty();
    if (!tls && !tokens) {
      warnings.push_back(absl::StrCat(
          "serving ", address,
          " in plaintext without authentication: anyone who can reach this "
          "port can run computations on this server, and reflection "
          "publishes its API. Set --tls_cert/--tls_key and --auth_token_file "
          "(or --tls_client_ca), or listen on a loopback address "
          "(--listen=127.0.0.1:PORT) behind a proxy that authenticates"));
    } else if (!tls) {
      warnings.push_back(absl::StrCat(
          "serving ", address,
          " in plaintext with bearer tokens: the tokens travel in clear and "
          "can be read by anyone on the path. Set --tls_cert/--tls_key"));
    } else if (!tokens && !client_certs) {
      warnings.push_back(absl::StrCat(
          "serving ", address,
          " over TLS without bearer tokens or client certificates: any "
          "client that can reach this port can run computations. Set "
          "--auth_token_file or --tls_client_ca"));
    }
  }
  if (options.memory_budget_bytes == 0) {
    warnings.push_back(
        "no memory budget (--memory_budget_bytes=0): requests are admitted "
        "whatever memory they need, and the workspace pool keeps every "
        "buffer it allocates; a burst of large requests can exhaust the "
        "machine's memory. Leave the flag unset for the default (40% of the "
        "machine's memory) or set a byte count");
  }
  return warnings;
}

}  // namespace attnserve::server
