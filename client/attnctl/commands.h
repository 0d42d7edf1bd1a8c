// The attnctl subcommands. Each prints its result to `out`, errors to `err`,
// and returns the process exit code: 0 on success, 1 when the server answers
// with an error (or, for health, is not SERVING), 2 for bad arguments.
//
//   attnctl forward --layout BNSD --dtype bf16 -b 1 -n 8 -s 1024 -d 128
//   attnctl nsa-backward --dtype bf16 -n 16 --kv_heads 1 -s 4096 -d 192
//       --dv 128 --block_size 64 --block_count 16
#ifndef ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "attnctl/workload.h"
#include "attnserve/client/client.h"

namespace attnserve::attnctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct CommandOptions {
  // forward/backward: upload the inputs once (PutTensor) and call by handle;
  // backward keeps the forward's outputs on the server too and sends only
  // dy. Data is resent when the server answers NOT_FOUND.
  bool resident = false;
  // forward: leave the outputs on the server (printed as handles, kept
  // after attnctl exits; fetch them with get).
  bool outputs_by_handle = false;
  // How resident tensors are uploaded (ttl_seconds, chunk size).
  PutOptions put;
  // Per-call deadline.
  absl::Duration timeout = absl::Minutes(5);
  // Number of times forward/backward repeat their timed call.
  int repeat = 1;
  // health: the service name to check ("" = the whole server).
  std::string health_service;
};

// The operator families attnctl drives: a forward RPC and its grad.
enum class Family {
  kFlashAttention,  // FlashAttentionScore(Grad); layouts BSH/SBH/BSND/BNSD.
  kNsa,             // NsaSelectedAttention(Grad); TND, -s tokens per batch.
};

// Prints SERVING / NOT_SERVING / ...; exit 0 only when SERVING.
int RunHealth(const Client& client, const CommandOptions& options,
              std::ostream& out, std::ostream& err);

// Prints GetServerInfo.
int RunInfo(const Client& client, const CommandOptions& options,
            std::ostream& out, std::ostream& err);

// INVALID_ARGUMENT naming the flag when `workload` is not one `family` can
// build requests from (checked before connecting: exit code 2).
absl::Status ValidateWorkload(Family family, const Workload& workload);

// Runs the family's forward `repeat` times on random inputs and prints the
// outputs' checksums and the timings (NSA: gflops count the selected keys
// only), and the bytes of the request sent. With options.resident the
// inputs are uploaded first and each call names them by handle.
int RunForward(const Client& client, Family family, const Workload& workload,
               const CommandOptions& options, std::ostream& out,
               std::ostream& err);

// Runs one forward for its outputs, then the grad `repeat` times with a
// random output gradient, and prints the gradients' checksums and the grad
// timings. With options.resident the forward keeps its inputs and outputs
// on the server and the grad sends only the output gradient.
int RunBackward(const Client& client, Family family, const Workload& workload,
                const CommandOptions& options, std::ostream& out,
                std::ostream& err);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_COMMANDS_H_
