// The real attnserve binary running as a child process on a free loopback
// port, for the end-to-end tests.
//
//   absl::StatusOr<std::unique_ptr<ServerProcess>> server =
//       ServerProcess::Start(kAttnserveBinary, {"--workers=2"});
//   RunProcess({kAttnctl, "health", "--target=" + (*server)->target()}, ...);
//   (*server)->Stop();  // also done by the destructor
#ifndef ATTNSERVE_TESTS_E2E_SERVER_PROCESS_H_
#define ATTNSERVE_TESTS_E2E_SERVER_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attnserve/client/client.h"

namespace attnserve::e2e {

// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read back
// and closed. Another process may take it before it is used, so callers
// retry on failure.
absl::StatusOr<int> PickFreePort();

class ServerProcess {
 public:
  // Starts `binary --listen=127.0.0.1:<port> <extra_args...>` with its output
  // in a log file, and waits until the grpc.health.v1 check answers SERVING.
  // A server that exits before that (e.g. because the port was taken in the
  // meantime) is retried on a new port, up to 3 attempts. Fails with the
  // server's log when no attempt becomes SERVING within `startup_timeout`.
  // `probe` says how to reach the server for the health check (TLS).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& binary, const std::vector<std::string>& extra_args,
      absl::Duration startup_timeout = absl::Seconds(60),
      const TlsOptions& probe = {});

  // The same on a given port (one attempt): e.g. to restart an instance at
  // the address a load balancer knows.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> StartOnPort(
      const std::string& binary, int port,
      const std::vector<std::string>& extra_args,
      absl::Duration startup_timeout = absl::Seconds(60));

  // Stops the server if it still runs.
  ~ServerProcess();

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Sends SIGTERM and waits up to `grace` for the process to exit, then
  // SIGKILL. Returns the exit status (-1 when killed by a signal). Calling it
  // again returns the first result.
  int Stop(absl::Duration grace = absl::Seconds(15));

  // Sends `signal` and returns at once.
  void Signal(int signal);

  // Waits up to `timeout` for the process to exit on its own; its exit code
  // (-1 when killed by a signal), or nullopt if it still runs.
  std::optional<int> WaitForExit(absl::Duration timeout);

  // Resident set size of the process in bytes (VmRSS), or -1 when gone.
  int64_t RssBytes() const;
  // Its peak so far (VmHWM), or -1 when gone.
  int64_t PeakRssBytes() const;

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  // "127.0.0.1:<port>".
  std::string target() const;
  // Everything the server wrote to stdout and stderr so far.
  std::string log() const;

  // Polls the log until it contains `text` or `timeout` passes; true when it
  // does. For waiting on something the server reports (e.g. that it took a
  // signal) instead of sleeping for a guessed time.
  bool AwaitLog(absl::string_view text, absl::Duration timeout) const;

 private:
  ServerProcess(pid_t pid, int port, std::string log_path, TlsOptions probe)
      : pid_(pid),
        port_(port),
        log_path_(std::move(log_path)),
        probe_(std::move(probe)) {}

  // Polls until SERVING, the process exits, or `timeout` passes.
  absl::Status WaitUntilServing(absl::Duration timeout);

  pid_t pid_;
  int port_;
  std::string log_path_;
  TlsOptions probe_;
  bool stopped_ = false;
  int exit_code_ = -1;
};

}  // namespace attnserve::e2e

#endif  // ATTNSERVE_TESTS_E2E_SERVER_PROCESS_H_
