// attnserve: the FlashAttention gRPC server. Flags and wiring only.
//
//   attnserve --listen=0.0.0.0:50051 --workers=8 --queue_depth=64
//
// SIGINT or SIGTERM drains the server (health NOT_SERVING, new calls
// UNAVAILABLE, calls in flight finish within --drain_timeout) and exits 0;
// a second SIGINT or SIGTERM during the drain exits at once with status 1,
// and so does a shutdown still not complete --shutdown_grace after the
// drain's time: the process is gone within --drain_timeout +
// --shutdown_grace of the first signal.
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/wire/process_heap.h"
#include "server/logging.h"
#include "server/server.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

// Every default comes from ServerOptions, so that the binary and a server
// built in-process (tests, embedders) run with the same configuration.
namespace {
const attnserve::server::ServerOptions& Defaults() {
  static const auto* defaults = new attnserve::server::ServerOptions();
  return *defaults;
}
}  // namespace

ABSL_FLAG(std::string, listen, Defaults().listen_address,
          "host:port to listen on (port 0 picks a free port), or unix:<path> "
          "for a unix socket");
ABSL_FLAG(int, workers, Defaults().workers,
          "compute worker threads (0 = the number of hardware threads)");
ABSL_FLAG(int, queue_depth, Defaults().queue_depth,
          "requests allowed to wait for a worker before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_message_bytes, Defaults().max_message_bytes,
          "largest request or response message in bytes (max 2147483647)");
ABSL_FLAG(uint64_t, memory_budget_bytes, Defaults().memory_budget_bytes,
          "cap on the bytes (request, outputs, workspace) held by the "
          "requests admitted at once, and on the workspace pool (default: "
          "40% of the machine's memory, or of its cgroup's limit; "
          "0 = unlimited)");
ABSL_FLAG(int64_t, max_tensor_elements, Defaults().max_tensor_elements,
          "largest element count of one tensor (and of any one dimension)");
ABSL_FLAG(int, threads_per_request, Defaults().threads_per_request,
          "most threads one request may use inside the engine: its worker "
          "plus engine helper threads that are idle (default: the number of "
          "hardware threads, so a large request running alone uses every "
          "core)");
ABSL_FLAG(bool, bf16_tile_products, Defaults().bf16_tile_products,
          "run BFLOAT16 requests' tile products in bf16 (fp32 accumulation) "
          "on CPUs with AVX-512 BF16 or AMX; false keeps the fp32 products "
          "(and their rounding) for every dtype");
ABSL_FLAG(double, flops_per_thread, Defaults().flops_per_thread,
          "a request gets one thread per this many FLOPs, up to "
          "--threads_per_request (0 = always --threads_per_request)");
ABSL_FLAG(double, bytes_per_thread, Defaults().bytes_per_thread,
          "or one thread per this many bytes of the request's tensors and "
          "outputs, whichever asks for more (memory-bound calls such as "
          "decoding; 0 = FLOPs only)");
ABSL_FLAG(double, small_request_flops, Defaults().small_request_flops,
          "requests of at most this many FLOPs are small: they are served "
          "before large ones and have a worker kept for them");
ABSL_FLAG(int, large_request_workers, Defaults().large_request_workers,
          "workers that may run large requests at once (0 = workers - 1)");
ABSL_FLAG(uint64_t, tensor_store_bytes, Defaults().tensor_store_bytes,
          "cap on the bytes of resident tensors (PutTensor, kept outputs), "
          "which also count against --memory_budget_bytes; 0 = the budget "
          "only");
ABSL_FLAG(absl::Duration, tensor_ttl, Defaults().tensor_ttl,
          "time to live of a resident tensor stored without ttl_seconds; "
          "every use restarts it");
ABSL_FLAG(absl::Duration, tensor_max_ttl, Defaults().tensor_max_ttl,
          "longest ttl_seconds a client may ask for");
ABSL_FLAG(bool, tensor_store_evict, Defaults().tensor_store_evict,
          "when a tensor to store does not fit, free the least recently used "
          "resident tensors no call is using instead of refusing it");
ABSL_FLAG(int64_t, tensor_chunk_bytes, Defaults().tensor_chunk_bytes,
          "bytes of tensor data per GetTensor message (at most "
          "--max_message_bytes less a few bytes of framing)");
ABSL_FLAG(absl::Duration, drain_timeout, Defaults().drain_timeout,
          "on SIGTERM/SIGINT, how long calls in flight may take to finish "
          "before they are cancelled");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "after --drain_timeout, how long the rest of the shutdown (calls "
          "cancelled, port closed, workers joined) may take before the "
          "process exits anyway with status 1");
ABSL_FLAG(int, max_concurrent_streams,
          Defaults().transport.max_concurrent_streams,
          "calls one client connection may have open at once; further calls "
          "wait in the client");
ABSL_FLAG(absl::Duration, keepalive_time, Defaults().transport.keepalive_time,
          "ping a connection quiet for this long, and close it when the ping "
          "is not answered within --keepalive_timeout");
ABSL_FLAG(absl::Duration, keepalive_timeout,
          Defaults().transport.keepalive_timeout,
          "how long a keepalive ping may go unanswered");
ABSL_FLAG(absl::Duration, min_client_ping_interval,
          Defaults().transport.min_client_ping_interval,
          "clients pinging more often than this are disconnected "
          "(too_many_pings); 0 = any rate");
ABSL_FLAG(absl::Duration, max_connection_idle,
          Defaults().transport.max_connection_idle,
          "close connections without calls for this long; 0 = never");
ABSL_FLAG(absl::Duration, max_connection_age,
          Defaults().transport.max_connection_age,
          "close connections older than this (gracefully, see "
          "--max_connection_age_grace), so that a load balancer can spread "
          "long-lived clients; 0 = never");
ABSL_FLAG(absl::Duration, max_connection_age_grace,
          Defaults().transport.max_connection_age_grace,
          "how long calls on a connection closed for its age may take to "
          "finish; 0 = no limit");
ABSL_FLAG(std::string, tls_cert, Defaults().tls_cert_file,
          "server certificate chain (PEM); with --tls_key, serve TLS only");
ABSL_FLAG(std::string, tls_key, Defaults().tls_key_file,
          "server private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca, Defaults().tls_client_ca_file,
          "CA bundle (PEM) for client certificates: mutual TLS");
ABSL_FLAG(std::string, auth_token_file, Defaults().auth_token_file,
          "bearer tokens, one per line (optionally `token Rpc,Rpc`); set = "
          "the attention RPCs need `authorization: Bearer <token>`");
ABSL_FLAG(std::string, metrics_listen, Defaults().metrics_listen,
          "host:port for Prometheus metrics (GET /metrics); empty = off");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off");
ABSL_FLAG(std::string, log_format, "text",
          "text or json (one JSON object per line)");

namespace {

// Blocks SIGINT/SIGTERM in this thread and every thread it starts later, so
// that the main thread can take them synchronously.
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace

int main(int argc, char** argv) {
  // First: a heap backed by huge pages (this may start the program again),
  // then, before any thread starts, one heap that keeps what calls free,
  // given back by the server once it is idle.
  attnserve::wire::UseHugePagesForHeap(argv);
  attnserve::wire::KeepFreedHeap();
  absl::SetProgramUsageMessage(
      "Serves FlashAttention forward/backward over gRPC.\n"
      "Usage: attnserve [--listen=host:port] [--workers=N] ...");
  absl::ParseCommandLine(argc, argv);

  // Logs go to standard error.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
  if (absl::Status logging = attnserve::server::ConfigureLogging(
          absl::GetFlag(FLAGS_log_level), absl::GetFlag(FLAGS_log_format));
      !logging.ok()) {
    spdlog::error("{}", std::string(logging.message()));
    return EXIT_FAILURE;
  }

  const sigset_t signals = BlockShutdownSignals();

  attnserve::server::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.queue_depth = absl::GetFlag(FLAGS_queue_depth);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  options.max_tensor_elements = absl::GetFlag(FLAGS_max_tensor_elements);
  options.threads_per_request = absl::GetFlag(FLAGS_threads_per_request);
  options.bf16_tile_products = absl::GetFlag(FLAGS_bf16_tile_products);
  options.flops_per_thread = absl::GetFlag(FLAGS_flops_per_thread);
  options.bytes_per_thread = absl::GetFlag(FLAGS_bytes_per_thread);
  options.small_request_flops = absl::GetFlag(FLAGS_small_request_flops);
  options.large_request_workers = absl::GetFlag(FLAGS_large_request_workers);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  options.transport.max_concurrent_streams =
      absl::GetFlag(FLAGS_max_concurrent_streams);
  options.transport.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.transport.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.transport.min_client_ping_interval =
      absl::GetFlag(FLAGS_min_client_ping_interval);
  options.transport.max_connection_idle =
      absl::GetFlag(FLAGS_max_connection_idle);
  options.transport.max_connection_age =
      absl::GetFlag(FLAGS_max_connection_age);
  options.transport.max_connection_age_grace =
      absl::GetFlag(FLAGS_max_connection_age_grace);
  options.tensor_store_bytes = absl::GetFlag(FLAGS_tensor_store_bytes);
  options.tensor_ttl = absl::GetFlag(FLAGS_tensor_ttl);
  options.tensor_max_ttl = absl::GetFlag(FLAGS_tensor_max_ttl);
  options.tensor_store_evict = absl::GetFlag(FLAGS_tensor_store_evict);
  options.tensor_chunk_bytes = absl::GetFlag(FLAGS_tensor_chunk_bytes);

  const absl::Duration shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  if (shutdown_grace < absl::ZeroDuration() ||
      shutdown_grace == absl::InfiniteDuration()) {
    spdlog::critical(
        "cannot start: --shutdown_grace must be >= 0 and finite, "
        "got {}",
        absl::FormatDuration(shutdown_grace));
    return EXIT_FAILURE;
  }

  attnserve::server::Server server(options);
  if (absl::Status started = server.Start(); !started.ok()) {
    spdlog::critical("cannot start: {}", started.ToString());
    return EXIT_FAILURE;
  }
  spdlog::info(
      "attnserve {} listening on {} (port {}, {}{}), {} workers, queue depth "
      "{}, memory budget {}, backends: {}, instance {}",
      ATTNSERVE_VERSION, options.listen_address, server.port(),
      options.tls_cert_file.empty()
          ? "plaintext"
          : (options.tls_client_ca_file.empty() ? "TLS" : "mutual TLS"),
      options.auth_token_file.empty() ? "" : ", bearer tokens",
      server.workers(), options.queue_depth,
      options.memory_budget_bytes == 0
          ? std::string("unlimited")
          : absl::StrCat(options.memory_budget_bytes, " bytes (",
                         options.memory_budget_bytes >> 20, " MiB)"),
      absl::StrJoin(server.backends(), ", "), server.instance_id());
  if (server.metrics_port() != 0) {
    spdlog::info("metrics on {} (port {})", options.metrics_listen,
                 server.metrics_port());
  }

  int received = 0;
  sigwait(&signals, &received);
  // The whole shutdown is bounded: the drain, then the grace.
  const absl::Duration bound = options.drain_timeout + shutdown_grace;
  const absl::Time exit_by = absl::Now() + bound;
  spdlog::info(
      "received {}: draining (up to {}; exiting within {} in any case); send "
      "it again to exit now",
      strsignal(received), absl::FormatDuration(options.drain_timeout),
      absl::FormatDuration(bound));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.Shutdown();
    stopped = true;
  });
  // Meanwhile a second signal, or the bound passing, forces the exit.
  const timespec poll_interval{0, 50 * 1000 * 1000};
  while (!stopped) {
    siginfo_t info;
    if (sigtimedwait(&signals, &info, &poll_interval) > 0) {
      spdlog::warn("received {} again: exiting without waiting for {} call(s)",
                   strsignal(info.si_signo), server.in_flight());
      spdlog::default_logger()->flush();
      std::_Exit(EXIT_FAILURE);
    }
    if (!stopped && absl::Now() > exit_by) {
      spdlog::error(
          "shutdown not complete {} after the signal (--drain_timeout + "
          "--shutdown_grace; {} call(s) in flight, {} job(s) running): "
          "exiting",
          absl::FormatDuration(bound), server.in_flight(),
          server.running_jobs());
      spdlog::default_logger()->flush();
      std::_Exit(EXIT_FAILURE);
    }
  }
  stopper.join();
  spdlog::info("stopped");
  return EXIT_SUCCESS;
}
