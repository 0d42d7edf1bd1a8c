#include "tests/e2e/test_pki.h"

#include <sys/stat.h>

#include <fstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/e2e/subprocess.h"

namespace attnserve::e2e {
namespace {

// Runs openssl with `args`; an error carrying its output when it fails.
absl::Status OpenSsl(const std::string& openssl,
                     std::vector<std::string> args) {
  args.insert(args.begin(), openssl);
  absl::StatusOr<ProcessResult> r = RunProcess(args, absl::Seconds(60));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl ", args[1], " failed: ", Describe(*r)));
  }
  return absl::OkStatus();
}

// A self-signed CA certificate and its key.
absl::Status MakeCa(const std::string& openssl, const std::string& cert,
                    const std::string& key, const std::string& name) {
  return OpenSsl(openssl,
                 {"req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                  "-out", cert, "-days", "2", "-subj", "/CN=" + name, "-addext",
                  "basicConstraints=critical,CA:TRUE", "-addext",
                  "keyUsage=critical,keyCertSign,cRLSign"});
}

// A leaf certificate signed by the CA, with the extensions in `extensions`.
absl::Status MakeLeaf(const std::string& openssl, const std::string& dir,
                      const std::string& name, const std::string& extensions,
                      const std::string& ca_cert, const std::string& ca_key,
                      const std::string& cert, const std::string& key,
                      int serial) {
  const std::string csr = absl::StrCat(dir, "/", name, ".csr");
  const std::string ext = absl::StrCat(dir, "/", name, ".ext");
  {
    std::ofstream out(ext);
    out << extensions;
  }
  absl::Status s =
      OpenSsl(openssl, {"req", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                        key, "-out", csr, "-subj", "/CN=" + name});
  if (!s.ok()) return s;
  return OpenSsl(openssl, {"x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey",
                           ca_key, "-set_serial", absl::StrCat(serial), "-days",
                           "2", "-extfile", ext, "-out", cert});
}

}  // namespace

absl::StatusOr<TestPki> MakeTestPki(const std::string& openssl,
                                    const std::string& dir) {
  if (openssl.empty()) {
    return absl::FailedPreconditionError("the openssl command was not found");
  }
  mkdir(dir.c_str(), 0700);
  TestPki pki;
  const std::string ca_key = dir + "/ca.key";
  const std::string other_ca_key = dir + "/other_ca.key";
  pki.ca_cert = dir + "/ca.pem";
  pki.server_cert = dir + "/server.pem";
  pki.server_key = dir + "/server.key";
  pki.client_cert = dir + "/client.pem";
  pki.client_key = dir + "/client.key";
  pki.other_ca_cert = dir + "/other_ca.pem";
  pki.rogue_client_cert = dir + "/rogue_client.pem";
  pki.rogue_client_key = dir + "/rogue_client.key";

  absl::Status s = MakeCa(openssl, pki.ca_cert, ca_key, "attnserve test CA");
  if (s.ok()) {
    s = MakeCa(openssl, pki.other_ca_cert, other_ca_key, "unrelated CA");
  }
  if (s.ok()) {
    s = MakeLeaf(openssl, dir, "server",
                 "basicConstraints=CA:FALSE\n"
                 "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                 "extendedKeyUsage=serverAuth\n",
                 pki.ca_cert, ca_key, pki.server_cert, pki.server_key, 1001);
  }
  if (s.ok()) {
    s = MakeLeaf(openssl, dir, "client",
                 "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
                 pki.ca_cert, ca_key, pki.client_cert, pki.client_key, 1002);
  }
  if (s.ok()) {
    s = MakeLeaf(openssl, dir, "rogue_client",
                 "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
                 pki.other_ca_cert, other_ca_key, pki.rogue_client_cert,
                 pki.rogue_client_key, 1003);
  }
  if (!s.ok()) return s;
  return pki;
}

}  // namespace attnserve::e2e
