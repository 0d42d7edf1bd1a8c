#include "tests/e2e/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/e2e/subprocess.h"

namespace attnserve::e2e {
namespace {

constexpr int kStartAttempts = 3;

// waitpid without blocking: true (and the exit code) once the child exited.
bool Reaped(pid_t pid, int* exit_code) {
  int wait_status = 0;
  const pid_t r = waitpid(pid, &wait_status, WNOHANG);
  if (r != pid) return false;
  *exit_code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1;
  return true;
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok =
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  if (!ok) return absl::InternalError("cannot bind a loopback port");
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& binary, const std::vector<std::string>& extra_args,
    absl::Duration startup_timeout, const TlsOptions& probe) {
  if (binary.empty()) {
    return absl::FailedPreconditionError("the attnserve binary was not built");
  }
  absl::Status last_error = absl::UnknownError("no attempt made");
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    std::vector<std::string> args = {
        absl::StrCat("--listen=127.0.0.1:", *port)};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    const std::string log_path = absl::StrCat(
        ::testing::TempDir(), "/attnserve-", getpid(), "-", *port, ".log");
    absl::StatusOr<pid_t> pid = SpawnWithLog(binary, args, log_path);
    if (!pid.ok()) return pid.status();
    std::unique_ptr<ServerProcess> server(
        new ServerProcess(*pid, *port, log_path, probe));
    last_error = server->WaitUntilServing(startup_timeout);
    if (last_error.ok()) return server;
    server->Stop(absl::Seconds(5));
    last_error = absl::Status(
        last_error.code(), absl::StrCat(last_error.message(),
                                        "\n--- server log\n", server->log()));
  }
  return last_error;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::StartOnPort(
    const std::string& binary, int port,
    const std::vector<std::string>& extra_args,
    absl::Duration startup_timeout) {
  if (binary.empty()) {
    return absl::FailedPreconditionError("the attnserve binary was not built");
  }
  std::vector<std::string> args = {absl::StrCat("--listen=127.0.0.1:", port)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  const std::string log_path =
      absl::StrCat(::testing::TempDir(), "/attnserve-", getpid(), "-", port,
                   "-", absl::ToUnixMicros(absl::Now()), ".log");
  absl::StatusOr<pid_t> pid = SpawnWithLog(binary, args, log_path);
  if (!pid.ok()) return pid.status();
  std::unique_ptr<ServerProcess> server(
      new ServerProcess(*pid, port, log_path, TlsOptions{}));
  const absl::Status serving = server->WaitUntilServing(startup_timeout);
  if (serving.ok()) return server;
  server->Stop(absl::Seconds(5));
  return absl::Status(
      serving.code(),
      absl::StrCat(serving.message(), "\n--- server log\n", server->log()));
}

absl::Status ServerProcess::WaitUntilServing(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::UnavailableError("not checked yet");
  while (absl::Now() < deadline) {
    // A fresh channel per attempt, with its own subchannel: a channel that
    // saw "connection refused" keeps backing off for seconds after the
    // server is up.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (probe_.enabled && !probe_.server_name.empty()) {
      args.SetSslTargetNameOverride(probe_.server_name);
    }
    const Client client(grpc::CreateCustomChannel(
        target(), ChannelCredentialsFor(probe_), args));
    absl::StatusOr<ServingStatus> status = client.Health("", absl::Seconds(1));
    // Checked after the health call: if our process lost the port to another
    // server, that one may be what answered SERVING.
    if (Reaped(pid_, &exit_code_)) {
      stopped_ = true;
      return absl::UnavailableError(absl::StrCat(
          "attnserve exited with ", exit_code_, " before becoming SERVING"));
    }
    if (status.ok() && *status == ServingStatus::kServing) {
      return absl::OkStatus();
    }
    last = status.ok() ? absl::UnavailableError(ServingStatusName(*status))
                       : status.status();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "attnserve on port ", port_,
      " not SERVING in time; last health check: ", last.ToString()));
}

int ServerProcess::Stop(absl::Duration grace) {
  if (stopped_) return exit_code_;
  stopped_ = true;
  kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    if (Reaped(pid_, &exit_code_)) return exit_code_;
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(pid_, SIGKILL);
  int wait_status = 0;
  while (waitpid(pid_, &wait_status, 0) < 0 && errno == EINTR) {
  }
  exit_code_ = -1;
  return exit_code_;
}

void ServerProcess::Signal(int signal) {
  if (!stopped_) kill(pid_, signal);
}

std::optional<int> ServerProcess::WaitForExit(absl::Duration timeout) {
  if (stopped_) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  do {
    if (Reaped(pid_, &exit_code_)) {
      stopped_ = true;
      return exit_code_;
    }
    absl::SleepFor(absl::Milliseconds(10));
  } while (absl::Now() < deadline);
  return std::nullopt;
}

namespace {

// A "Vm...:" line of /proc/<pid>/status in bytes, or -1.
int64_t StatusBytes(pid_t pid, const char* format) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    int64_t kib = 0;
    if (std::sscanf(line.c_str(), format, &kib) == 1) return kib * 1024;
  }
  return -1;
}

}  // namespace

int64_t ServerProcess::RssBytes() const {
  return stopped_ ? -1 : StatusBytes(pid_, "VmRSS: %ld kB");
}

int64_t ServerProcess::PeakRssBytes() const {
  return stopped_ ? -1 : StatusBytes(pid_, "VmHWM: %ld kB");
}

ServerProcess::~ServerProcess() {
  Stop();
  std::remove(log_path_.c_str());
}

std::string ServerProcess::target() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::string ServerProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool ServerProcess::AwaitLog(absl::string_view text,
                             absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(log(), text)) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace attnserve::e2e
