#include "attnctl/connection_flags.h"

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server address, host:port.");
ABSL_FLAG(std::vector<std::string>, metadata, {},
          "Comma-separated key=value pairs sent as call metadata, e.g. "
          "x-request-id=job-17.");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS (implied by --tls_ca, --tls_cert, --tls_key).");
ABSL_FLAG(std::string, tls_ca, "",
          "CA certificates (PEM) to verify the server with; default: the "
          "system's roots.");
ABSL_FLAG(std::string, tls_cert, "",
          "Client certificate chain (PEM) for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "Client private key (PEM).");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify the server's certificate against, instead of the "
          "target's host.");
ABSL_FLAG(std::string, token_file, "",
          "File whose first line is a bearer token, sent as `authorization: "
          "Bearer <token>`.");

namespace attnserve::attnctl {

std::string TargetFromFlags() { return absl::GetFlag(FLAGS_target); }

absl::StatusOr<ClientOptions> ClientOptionsFromFlags() {
  ClientOptions options;
  for (const std::string& pair : absl::GetFlag(FLAGS_metadata)) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metadata: expected key=value, got \"", pair, "\""));
    }
    options.metadata.emplace_back(absl::AsciiStrToLower(pair.substr(0, eq)),
                                  pair.substr(eq + 1));
  }
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (absl::GetFlag(FLAGS_tls) || !ca.empty() || !cert.empty() ||
      !key.empty()) {
    absl::StatusOr<TlsOptions> tls = TlsFromFiles(ca, cert, key);
    if (!tls.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls_*: ", tls.status().message()));
    }
    options.tls = *std::move(tls);
    options.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  }
  if (const std::string path = absl::GetFlag(FLAGS_token_file); !path.empty()) {
    std::ifstream in(path);
    std::string token;
    if (!in || !std::getline(in, token)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token_file: cannot read a token from ", path));
    }
    options.bearer_token = std::string(absl::StripAsciiWhitespace(token));
    if (options.bearer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token_file: the first line of ", path, " is empty"));
    }
  }
  return options;
}

}  // namespace attnserve::attnctl
