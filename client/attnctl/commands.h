// The attnctl subcommands. Each prints its result to `out`, errors to `err`,
// and returns the process exit code: 0 on success, 1 when the server answers
// with an error (or, for health, is not SERVING), 2 for bad arguments.
//
//   attnctl forward --layout BNSD --dtype bf16 -b 1 -n 8 -s 1024 -d 128
#ifndef ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "attnctl/workload.h"
#include "attnserve/client/client.h"

namespace attnserve::attnctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct CommandOptions {
  // Per-call deadline.
  absl::Duration timeout = absl::Minutes(5);
  // Number of times forward/backward repeat their timed call.
  int repeat = 1;
  // health: the service name to check ("" = the whole server).
  std::string health_service;
};

// Prints SERVING / NOT_SERVING / ...; exit 0 only when SERVING.
int RunHealth(const Client& client, const CommandOptions& options,
              std::ostream& out, std::ostream& err);

// Prints GetServerInfo.
int RunInfo(const Client& client, const CommandOptions& options,
            std::ostream& out, std::ostream& err);

// Runs FlashAttentionScore `repeat` times on random inputs and prints the
// outputs' checksums and the timings.
int RunForward(const Client& client, const Workload& workload,
               const CommandOptions& options, std::ostream& out,
               std::ostream& err);

// Runs one forward for attention_out / softmax_max / softmax_sum, then
// FlashAttentionScoreGrad `repeat` times with random dy, and prints the
// gradients' checksums and the grad timings.
int RunBackward(const Client& client, const Workload& workload,
                const CommandOptions& options, std::ostream& out,
                std::ostream& err);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_
