// A real nginx (Debian's package) run by a test as a gRPC load balancer on a
// loopback port, with its configuration, logs and temp files in a private
// directory.
//
//   absl::StatusOr<std::unique_ptr<NginxProcess>> lb =
//       NginxProcess::Start(FindNginx(), {"127.0.0.1:7001", "127.0.0.1:7002"});
//   Client::Connect((*lb)->target());
#ifndef ATTNSERVE_TESTS_E2E_NGINX_PROCESS_H_
#define ATTNSERVE_TESTS_E2E_NGINX_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnserve::e2e {

// The nginx binary: `configured` when executable, else /usr/sbin/nginx or
// /sbin/nginx; "" when there is none.
std::string FindNginx(const std::string& configured);

// The configuration the test runs: the server block of the deployment
// example (`deploy_conf`, whose upstream servers and listen address are
// replaced by `backends` and 127.0.0.1:`port`) inside a minimal main
// configuration that keeps every file in `dir`.
absl::StatusOr<std::string> NginxConfig(
    const std::string& deploy_conf, const std::vector<std::string>& backends,
    int port, const std::string& dir);

class NginxProcess {
 public:
  // Writes the configuration, checks it with `nginx -t`, starts nginx in
  // the foreground and waits until its port accepts connections.
  static absl::StatusOr<std::unique_ptr<NginxProcess>> Start(
      const std::string& nginx, const std::string& deploy_conf,
      const std::vector<std::string>& backends);
  // Stops nginx (SIGQUIT, then SIGKILL).
  ~NginxProcess();

  // "127.0.0.1:<port>".
  std::string target() const;
  // nginx's error log so far.
  std::string error_log() const;

 private:
  NginxProcess(pid_t pid, int port, std::string dir)
      : pid_(pid), port_(port), dir_(std::move(dir)) {}

  pid_t pid_;
  int port_;
  std::string dir_;
};

}  // namespace attnserve::e2e

#endif  // ATTNSERVE_TESTS_E2E_NGINX_PROCESS_H_
