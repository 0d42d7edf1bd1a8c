// The attnserve server: engine, scheduler, AttentionService, health checking,
// reflection and (optionally) a Prometheus endpoint, with TLS and token auth.
//
//   ServerOptions options;
//   options.listen_address = "127.0.0.1:0";  // Port 0: the OS picks one.
//   Server server(options);
//   ATTN_RETURN_IF_ERROR(server.Start());
//   int port = server.port();
//   ...
//   server.Shutdown(absl::Seconds(30));  // Drain, then stop.
#ifndef ATTNSERVE_SERVER_SERVER_H_
#define ATTNSERVE_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "attnserve/core/engine.h"
#include "grpcpp/grpcpp.h"
#include "server/attention_service.h"
#include "server/call_guard.h"
#include "server/call_tracker.h"
#include "server/clock.h"
#include "server/machine.h"
#include "server/memory_budget.h"
#include "server/metrics.h"
#include "server/scheduler.h"
#include "server/tensor_store.h"
#include "server/token_auth.h"
#include "server/transport_limits.h"

namespace attnserve::server {

// The server's configuration. These defaults are the production defaults:
// the attnserve binary's flags take theirs from here.
struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see Server::port()).
  std::string listen_address = "0.0.0.0:50051";
  // Compute worker threads; 0 = the number of hardware threads.
  int workers = 0;
  // Requests allowed to wait for a worker.
  int queue_depth = 64;
  // Largest request or response message, in bytes (at most 2^31 - 1).
  int64_t max_message_bytes = int64_t{1} << 30;
  // Cap on the memory (request, outputs, workspace) of the requests
  // admitted at once, and on leased workspace; 0 = unlimited. Default: 40 %
  // of the machine's memory (or of its cgroup's limit), see machine.h.
  uint64_t memory_budget_bytes = DefaultMemoryBudget();
  // Largest element count of one tensor, and of one of its dims.
  int64_t max_tensor_elements = int64_t{1} << 28;
  // Resident tensors (tensor_store.h). Cap on the bytes kept on the server,
  // besides the memory budget they also count against; 0 = the budget only.
  uint64_t tensor_store_bytes = 0;
  // Time to live of a resident tensor stored without ttl_seconds, and the
  // longest ttl_seconds accepted. Every use of a handle restarts it.
  absl::Duration tensor_ttl = absl::Minutes(10);
  absl::Duration tensor_max_ttl = absl::Hours(1);
  // When a tensor to store does not fit, free the least recently used
  // stored tensors that no call is using (instead of RESOURCE_EXHAUSTED).
  bool tensor_store_evict = false;
  // Bytes of tensor data per GetTensor message (kept below
  // max_message_bytes).
  int64_t tensor_chunk_bytes = int64_t{4} << 20;
  // Intra-request parallelism: most threads one running request may use
  // (its worker plus idle engine helper threads).
  int threads_per_request = HardwareThreads();
  // BFLOAT16 requests run bf16 tile products where the CPU has them
  // (core::EngineOptions::bf16_tile_products); false: fp32 products only.
  bool bf16_tile_products = true;
  // One thread per this many FLOPs of a request, up to threads_per_request;
  // 0 = always threads_per_request.
  double flops_per_thread = 2.5e8;
  // Or one thread per this many bytes its tensors hold (inputs and
  // outputs), whichever asks for more: a call that moves much memory for
  // few FLOPs is bound by one core's memory bandwidth. 0 = FLOPs only.
  double bytes_per_thread = 16.0 * (1 << 20);
  // Requests of at most this many FLOPs go to the small lane and are served
  // before large ones (see scheduler.h); 1e300 puts every request in one
  // FIFO lane.
  double small_request_flops = 1e9;
  // Workers that may run large requests at once; 0 = workers - 1.
  int large_request_workers = 0;
  // Server certificate chain and private key (PEM files): both or neither.
  // With them the port speaks TLS only.
  std::string tls_cert_file;
  std::string tls_key_file;
  // CA bundle (PEM file) that client certificates must chain to; set = mutual
  // TLS (clients without a valid certificate cannot connect). Needs TLS.
  std::string tls_client_ca_file;
  // Token file (see token_auth.h); set = every AttentionService RPC needs a
  // bearer token, and reflection is not served.
  std::string auth_token_file;
  // host:port of the Prometheus endpoint (GET /metrics); empty = none.
  std::string metrics_listen;
  // How long a drain that ended in time keeps refusing new calls before the
  // port closes (see Shutdown()); at most what is left of the drain timeout.
  absl::Duration drain_linger = absl::Milliseconds(250);
  // How long Shutdown() lets calls in flight finish by default.
  absl::Duration drain_timeout = absl::Seconds(30);
  // HTTP/2 connection limits (streams per connection, keepalive, idle and
  // maximum connection age).
  TransportLimits transport;
  // Clock for the scheduler and the tensor store's TTLs; null = the wall
  // clock. Must outlive the server.
  Clock* clock = nullptr;
  // Sent as trailing metadata `x-attnserve-instance` on every response;
  // empty = "<host>-<pid>-<8 random hex digits>", new for every start.
  std::string instance_id;
};

// INVALID_ARGUMENT naming the offending option, or OK.
absl::Status ValidateServerOptions(const ServerOptions& options);

class Server {
 public:
  explicit Server(const ServerOptions& options);
  // Shuts down (without waiting for calls) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Builds and starts the gRPC server (and the metrics endpoint).
  // INVALID_ARGUMENT for bad options or unreadable TLS / token files,
  // UNAVAILABLE when an address cannot be bound, FAILED_PRECONDITION when
  // called twice.
  absl::Status Start();

  // The bound port (the chosen one when listening on port 0); 0 before
  // Start().
  int port() const { return port_; }
  // The metrics endpoint's port; 0 when there is none.
  int metrics_port() const;
  // Worker threads actually started.
  int workers() const;
  // The engine's compute backends, e.g. {"openblas:Haswell"}.
  std::vector<std::string> backends() const { return engine_.backends(); }
  // AttentionService calls in flight right now (arrived, not yet done).
  int in_flight() const { return tracker_.in_flight(); }
  // Jobs running on a compute worker right now.
  int running_jobs() const {
    return scheduler_ == nullptr ? 0 : scheduler_->running();
  }
  // Jobs admitted and waiting for a compute worker right now.
  int queued_jobs() const {
    return scheduler_ == nullptr ? 0 : scheduler_->queued();
  }
  // Bytes requests hold in the memory budget right now: admitted jobs, and
  // the responses of finished ones until gRPC has sent them.
  uint64_t request_memory_bytes() const {
    return scheduler_ == nullptr ? 0 : scheduler_->memory_in_use();
  }
  // The instance id every response carries (x-attnserve-instance).
  const std::string& instance_id() const { return tracker_.instance_id(); }
  // The resident tensors (null before Start()).
  TensorStore* tensor_store() { return store_.get(); }
  // The metrics (null when no metrics endpoint was asked for).
  const ServerMetrics* metrics() const { return metrics_.get(); }
  core::Engine& engine() { return engine_; }

  // Blocks until Shutdown() has completed; returns at once if the server was
  // never started.
  void Wait();

  // Graceful stop. Health turns NOT_SERVING and every AttentionService call
  // whose headers arrive from now on gets UNAVAILABLE at once, while health
  // checks are still answered. Calls in flight (from their headers on: also
  // those whose request is still arriving; queued; running) get
  // `drain_timeout` to finish; those still there then are cancelled (their
  // jobs stop between tiles and the calls end CANCELLED) and get 5 s more
  // to end. When they all finished in time, new calls are still refused for
  // ServerOptions::drain_linger (within `drain_timeout`), so that calls
  // whose headers were on their way get UNAVAILABLE rather than being cut
  // by the close. Then the listener closes and the workers join.
  // Idempotent; thread-safe (a second caller waits for the first to complete).
  // Must not be called from a handler or a worker thread.
  void Shutdown(absl::Duration drain_timeout);
  // The same with ServerOptions::drain_timeout.
  void Shutdown() { Shutdown(options_.drain_timeout); }

 private:
  const ServerOptions options_;
  core::Engine engine_;
  CallTracker tracker_;
  // Shared with the TLS credentials' header check (header_token_check.h).
  std::shared_ptr<const TokenAuth> auth_;
  MemoryBudget budget_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<CallGuard> guard_;
  std::unique_ptr<TensorStore> store_;
  std::unique_ptr<AttentionService> service_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  // Frees the engine's idle buffers (BufferPool::TrimIdle) once a second,
  // and the heap's free memory (ReleaseFreeHeap) once no call has been in
  // flight for the buffers' idle time, until stopped.
  absl::Notification stop_trimming_;
  std::thread trimmer_;

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_SERVER_H_
