#include "tests/e2e/nginx_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/e2e/subprocess.h"

namespace attnserve::e2e {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// True when a TCP connection to 127.0.0.1:`port` is accepted.
bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

bool Executable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

}  // namespace

std::string FindNginx(const std::string& configured) {
  for (const std::string& path : {configured, std::string("/usr/sbin/nginx"),
                                  std::string("/sbin/nginx")}) {
    if (Executable(path)) return path;
  }
  return "";
}

absl::StatusOr<std::string> NginxConfig(
    const std::string& deploy_conf, const std::vector<std::string>& backends,
    int port, const std::string& dir) {
  const std::string example = ReadFile(deploy_conf);
  if (example.empty()) {
    return absl::NotFoundError(absl::StrCat("cannot read ", deploy_conf));
  }
  std::vector<std::string> lines;
  bool in_upstream = false;
  bool servers_written = false;
  bool listen_written = false;
  for (absl::string_view line : absl::StrSplit(example, '\n')) {
    const absl::string_view code = absl::StripLeadingAsciiWhitespace(line);
    if (absl::StartsWith(code, "upstream ")) in_upstream = true;
    if (in_upstream && absl::StartsWith(code, "}")) in_upstream = false;
    if (in_upstream && absl::StartsWith(code, "server ")) {
      if (!servers_written) {
        for (const std::string& backend : backends) {
          lines.push_back(absl::StrCat("    server ", backend,
                                       " max_fails=1 fail_timeout=5s;"));
        }
        servers_written = true;
      }
      continue;
    }
    if (absl::StartsWith(code, "listen ")) {
      lines.push_back(absl::StrCat("    listen 127.0.0.1:", port, " http2;"));
      listen_written = true;
      continue;
    }
    lines.emplace_back(line);
  }
  if (!servers_written || !listen_written) {
    return absl::InvalidArgumentError(absl::StrCat(
        deploy_conf, " has no upstream server lines or no listen line"));
  }
  std::string conf = absl::StrCat(
      geteuid() == 0 ? "user root;\n" : "", "worker_processes 1;\n", "pid ",
      dir, "/nginx.pid;\n", "error_log ", dir, "/error.log info;\n",
      "events { worker_connections 256; }\n", "http {\n", "  access_log ", dir,
      "/access.log;\n", "  client_body_temp_path ", dir, "/client_body;\n",
      "  proxy_temp_path ", dir, "/proxy;\n", "  fastcgi_temp_path ", dir,
      "/fastcgi;\n", "  uwsgi_temp_path ", dir, "/uwsgi;\n",
      "  scgi_temp_path ", dir, "/scgi;\n", absl::StrJoin(lines, "\n"),
      "\n}\n");
  return conf;
}

absl::StatusOr<std::unique_ptr<NginxProcess>> NginxProcess::Start(
    const std::string& nginx, const std::string& deploy_conf,
    const std::vector<std::string>& backends) {
  absl::StatusOr<int> port = PickFreePort();
  if (!port.ok()) return port.status();
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/nginx-", getpid(), "-", *port);
  mkdir(dir.c_str(), 0755);
  absl::StatusOr<std::string> conf =
      NginxConfig(deploy_conf, backends, *port, dir);
  if (!conf.ok()) return conf.status();
  const std::string conf_path = dir + "/nginx.conf";
  {
    std::ofstream out(conf_path);
    out << *conf;
  }
  const std::vector<std::string> common = {
      "-p", dir, "-e", dir + "/error.log", "-c", conf_path};
  std::vector<std::string> check = {nginx, "-t", "-q"};
  check.insert(check.end(), common.begin(), common.end());
  absl::StatusOr<ProcessResult> checked = RunProcess(check, absl::Seconds(30));
  if (!checked.ok()) return checked.status();
  if (checked->exit_code != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("nginx -t rejected the configuration:\n",
                     Describe(*checked), "\n", *conf));
  }
  std::vector<std::string> args = common;
  args.push_back("-g");
  args.push_back("daemon off;");
  absl::StatusOr<pid_t> pid = SpawnWithLog(nginx, args, dir + "/stdout.log");
  if (!pid.ok()) return pid.status();
  std::unique_ptr<NginxProcess> process(new NginxProcess(*pid, *port, dir));
  // Ready once the port accepts connections.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      process->pid_ = -1;
      return absl::UnavailableError(
          absl::StrCat("nginx exited at start:\n", process->error_log()));
    }
    if (Accepts(*port)) return process;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "nginx did not accept connections:\n", process->error_log()));
}

NginxProcess::~NginxProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGQUIT);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int status = 0;
  while (absl::Now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) return;
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
}

std::string NginxProcess::target() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::string NginxProcess::error_log() const {
  return ReadFile(dir_ + "/error.log");
}

}  // namespace attnserve::e2e
