#include "tests/server/tcp_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace attnserve::server::testing {

TcpRelay::TcpRelay(int server_port) : server_port_(server_port) {
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(listener_, 1) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "relay: cannot listen";
    return;
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Run(); });
}

TcpRelay::~TcpRelay() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  close(listener_);
}

std::string TcpRelay::target() const {
  return absl::StrCat("127.0.0.1:", port_);
}

void TcpRelay::Run() {
  pollfd accept_fd{listener_, POLLIN, 0};
  while (!stop_ && poll(&accept_fd, 1, 50) == 0) {
  }
  if (stop_) return;
  const int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
  const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(server_port_));
  if (client < 0 ||
      connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "relay: cannot connect";
    if (client >= 0) close(client);
    close(server);
    return;
  }
  std::vector<char> buffer(1 << 16);
  // Copies what `from` has into `to`, counting it in `count`; false once
  // either side closed.
  auto pass = [&](int from, int to, std::atomic<int64_t>& count) {
    const ssize_t n = read(from, buffer.data(), buffer.size());
    if (n <= 0) return false;
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = write(to, buffer.data() + done, n - done);
      if (w <= 0) return false;
      done += w;
    }
    count += n;
    return true;
  };
  while (!stop_) {
    const bool client_held = from_client_ >= client_hold_at_;
    const bool server_held = from_server_ >= server_hold_at_;
    pollfd fds[2] = {{client, static_cast<short>(client_held ? 0 : POLLIN), 0},
                     {server, static_cast<short>(server_held ? 0 : POLLIN), 0}};
    if (poll(fds, 2, 20) < 0) break;
    if ((fds[0].revents & (POLLIN | POLLHUP)) &&
        !pass(client, server, from_client_)) {
      break;
    }
    if ((fds[1].revents & (POLLIN | POLLHUP)) &&
        !pass(server, client, from_server_)) {
      break;
    }
  }
  close(client);
  close(server);
}

}  // namespace attnserve::server::testing
