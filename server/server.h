// The attnserve server: engine, scheduler, AttentionService, health checking
// and reflection on one gRPC port.
//
//   ServerOptions options;
//   options.listen_address = "127.0.0.1:0";  // Port 0: the OS picks one.
//   Server server(options);
//   ATTN_RETURN_IF_ERROR(server.Start());
//   int port = server.port();
//   ...
//   server.Shutdown();  // Or Wait() until someone else shuts it down.
#ifndef ATTNSERVE_SERVER_SERVER_H_
#define ATTNSERVE_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attnserve/core/engine.h"
#include "grpcpp/grpcpp.h"
#include "server/attention_service.h"
#include "server/clock.h"
#include "server/scheduler.h"

namespace attnserve::server {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see Server::port()).
  std::string listen_address = "0.0.0.0:50051";
  // Compute worker threads; 0 = the number of hardware threads.
  int workers = 0;
  // Requests allowed to wait for a worker.
  int queue_depth = 64;
  // Largest request or response message, in bytes (at most 2^31 - 1).
  int64_t max_message_bytes = int64_t{1} << 30;
  // Cap on workspace bytes leased at once; 0 = unlimited.
  uint64_t memory_budget_bytes = 0;
  // Intra-request parallelism (threads per running request).
  int threads_per_request = 1;
  // Clock for the scheduler; null = the wall clock. Must outlive the server.
  Clock* clock = nullptr;
};

// INVALID_ARGUMENT naming the offending option, or OK.
absl::Status ValidateServerOptions(const ServerOptions& options);

class Server {
 public:
  explicit Server(const ServerOptions& options);
  // Shuts down if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Builds and starts the gRPC server. INVALID_ARGUMENT for bad options,
  // UNAVAILABLE when the address cannot be bound, FAILED_PRECONDITION when
  // called twice.
  absl::Status Start();

  // The bound port (the chosen one when listening on port 0); 0 before
  // Start().
  int port() const { return port_; }
  // Worker threads actually started.
  int workers() const;
  // The engine's compute backends, e.g. {"openblas:Haswell"}.
  std::vector<std::string> backends() const { return engine_.backends(); }

  // Blocks until Shutdown() has completed; returns at once if the server was
  // never started.
  void Wait();

  // Graceful stop: health turns NOT_SERVING, new calls are refused, calls in
  // flight get `grace` to finish before they are cancelled, then the
  // scheduler drains and joins. Idempotent; thread-safe (a second caller
  // waits for the first to complete). Must not be called from a handler or a
  // worker thread.
  void Shutdown(absl::Duration grace = absl::Seconds(10));

 private:
  const ServerOptions options_;
  core::Engine engine_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<AttentionService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_SERVER_H_
