// What one run of an operator did, as the engine and its kernels count it.
//
//   ATTN_ASSIGN_OR_RETURN(ForwardResult out, engine.Run(call, token));
//   out.stats.workspace_bytes;  // == call.workspace_bytes()
//
// Kernels add their tile counts; the engine sets the workspace and FLOPs.
#ifndef ATTNSERVE_CORE_RUN_STATS_H_
#define ATTNSERVE_CORE_RUN_STATS_H_

#include <cstdint>

namespace attnserve::core {

struct RunStats {
  // Workspace leased for the run (the largest lease when a grad recomputes
  // its forward first).
  uint64_t workspace_bytes = 0;
  // FLOPs of the whole run, a recomputed forward included.
  double flops = 0;
  // Tiles computed and tiles skipped as fully masked (NSA: (token, kv head)
  // pairs that attended something / nothing).
  int64_t tiles_computed = 0;
  int64_t tiles_skipped = 0;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_RUN_STATS_H_
