// A TCP relay between a client and a real server on loopback, for tests
// that need the bytes of a connection held back in one direction: a client
// that stops reading its answer, or a request that stops half-way up.
//
//   TcpRelay relay(server.port());
//   auto channel = grpc::CreateChannel(relay.target(), ...);
//   relay.HoldFromClientAfter(1 << 20);  // The request stalls after 1 MiB.
//   ...
//   relay.Release();
//
// Relays one connection (the first accepted), both ways.
#ifndef ATTNSERVE_TESTS_SERVER_TCP_RELAY_H_
#define ATTNSERVE_TESTS_SERVER_TCP_RELAY_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace attnserve::server::testing {

class TcpRelay {
 public:
  explicit TcpRelay(int server_port);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  // Where clients connect.
  std::string target() const;

  // Once `bytes` more came from the server (or from the client), the relay
  // reads nothing more from it: its bytes pile up in the socket buffers and
  // the HTTP/2 windows. (Not at once: an upload needs the server's window
  // updates to reach the client.)
  void HoldFromServerAfter(int64_t bytes) {
    server_hold_at_ = from_server_ + bytes;
  }
  void HoldFromClientAfter(int64_t bytes) {
    client_hold_at_ = from_client_ + bytes;
  }
  // Passes everything on again, both ways.
  void Release() {
    server_hold_at_ = INT64_MAX;
    client_hold_at_ = INT64_MAX;
  }

  int64_t bytes_from_server() const { return from_server_; }
  int64_t bytes_from_client() const { return from_client_; }

 private:
  void Run();

  const int server_port_;
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> server_hold_at_{INT64_MAX};
  std::atomic<int64_t> client_hold_at_{INT64_MAX};
  std::atomic<int64_t> from_server_{0};
  std::atomic<int64_t> from_client_{0};
};

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_TCP_RELAY_H_
