// attnserve: the FlashAttention gRPC server. Flags and wiring only.
//
//   attnserve --listen=0.0.0.0:50051 --workers=8 --queue_depth=64
//
// SIGINT or SIGTERM shuts the server down gracefully and exits with 0.
#include <signal.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "host:port to listen on (port 0 picks a free port)");
ABSL_FLAG(int, workers, static_cast<int>(std::thread::hardware_concurrency()),
          "compute worker threads (default: the number of hardware threads)");
ABSL_FLAG(int, queue_depth, 64,
          "requests allowed to wait for a worker before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{1} << 30,
          "largest request or response message in bytes (max 2147483647)");
ABSL_FLAG(uint64_t, memory_budget_bytes, 0,
          "cap on workspace bytes leased at once; 0 = unlimited");
ABSL_FLAG(int, threads_per_request,
          static_cast<int>(std::thread::hardware_concurrency()),
          "threads one request may use inside the engine: its worker plus "
          "engine helper threads that are idle (default: the number of "
          "hardware threads, so a request running alone uses every core)");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off");

namespace {

// Blocks SIGINT/SIGTERM in this thread and every thread it starts later, so
// that the main thread can take them synchronously with sigwait().
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
  absl::SetProgramUsageMessage(
      "Serves FlashAttention forward/backward over gRPC.\n"
      "Usage: attnserve [--listen=host:port] [--workers=N] ...");
  absl::ParseCommandLine(argc, argv);

  const spdlog::level::level_enum level =
      spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    spdlog::error("unknown --log_level={}", absl::GetFlag(FLAGS_log_level));
    return EXIT_FAILURE;
  }
  spdlog::set_level(level);

  const sigset_t signals = BlockShutdownSignals();

  attnserve::server::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.queue_depth = absl::GetFlag(FLAGS_queue_depth);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  options.threads_per_request = absl::GetFlag(FLAGS_threads_per_request);

  attnserve::server::Server server(options);
  if (absl::Status started = server.Start(); !started.ok()) {
    spdlog::critical("cannot start: {}", started.ToString());
    return EXIT_FAILURE;
  }
  spdlog::info(
      "attnserve {} listening on {} (port {}), {} workers, queue depth {}, "
      "backends: {}",
      ATTNSERVE_VERSION, options.listen_address, server.port(),
      server.workers(), options.queue_depth,
      absl::StrJoin(server.backends(), ", "));

  int received = 0;
  sigwait(&signals, &received);
  spdlog::info("received {}, shutting down", strsignal(received));
  server.Shutdown();
  spdlog::info("stopped");
  return EXIT_SUCCESS;
}
