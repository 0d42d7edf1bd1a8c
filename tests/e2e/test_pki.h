// Certificates for the TLS tests, made with the openssl command at test
// time: a CA, a server certificate for 127.0.0.1 / localhost and a client
// certificate signed by it, and a second, unrelated CA with its own client
// certificate (the "wrong credentials").
//
//   absl::StatusOr<TestPki> pki = MakeTestPki("/usr/bin/openssl", dir);
//   ServerProcess::Start(kAttnserveBinary, {"--tls_cert=" + pki->server_cert,
//                                           "--tls_key=" + pki->server_key});
#ifndef ATTNSERVE_TESTS_E2E_TEST_PKI_H_
#define ATTNSERVE_TESTS_E2E_TEST_PKI_H_

#include <string>

#include "absl/status/statusor.h"

namespace attnserve::e2e {

// Paths of PEM files, all inside one directory.
struct TestPki {
  std::string ca_cert;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  // Another CA, and a client certificate it signed.
  std::string other_ca_cert;
  std::string rogue_client_cert, rogue_client_key;
};

// Writes the files into `dir` (created if needed) using `openssl`. Fails
// with openssl's output when a command fails.
absl::StatusOr<TestPki> MakeTestPki(const std::string& openssl,
                                    const std::string& dir);

}  // namespace attnserve::e2e

#endif  // ATTNSERVE_TESTS_E2E_TEST_PKI_H_
