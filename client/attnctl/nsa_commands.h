// The attnctl subcommands for NSA selected attention. Like the others they
// print "key: value" lines to `out`, errors to `err`, and return the exit
// code (0 success, 1 server error).
//
//   attnctl nsa-forward --dtype bf16 -n 16 --kv_heads 1 -s 4096 -d 192
//       --dv 128 --block_size 64 --block_count 16
#ifndef ATTNSERVE_CLIENT_ATTNCTL_NSA_COMMANDS_H_
#define ATTNSERVE_CLIENT_ATTNCTL_NSA_COMMANDS_H_

#include <ostream>

#include "attnctl/commands.h"
#include "attnctl/nsa_workload.h"
#include "attnserve/client/client.h"

namespace attnserve::attnctl {

// Runs NsaSelectedAttention `repeat` times on random inputs and prints the
// outputs' checksums and the timings (gflops count the selected keys only).
int RunNsaForward(const Client& client, const NsaWorkload& workload,
                  const CommandOptions& options, std::ostream& out,
                  std::ostream& err);

// Runs one forward for attention_out / softmax_max / softmax_sum, then
// NsaSelectedAttentionGrad `repeat` times with a random attention_out_grad,
// and prints the gradients' checksums and the grad timings.
int RunNsaBackward(const Client& client, const NsaWorkload& workload,
                   const CommandOptions& options, std::ostream& out,
                   std::ostream& err);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_NSA_COMMANDS_H_
