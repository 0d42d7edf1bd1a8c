// FlashAttention forward and backward on fp32 tiles (FA2 decomposition).
//
// Forward, per (batch, kv head): K and V are widened to fp32 once and shared
// by the G query heads of the group; per Sq tile an online softmax runs over
// the Skv tiles, skipping tiles the band masks entirely.
// Backward, per (batch, kv head): P is recomputed from softmax_max/sum;
// dK/dV accumulate over the group in scratch and are written once, so the
// result is deterministic.
//
// Both return CANCELLED / DEADLINE_EXCEEDED from the token, checked between
// tiles; `scratch` must hold plan.workspace_bytes, split into
// args.tiling.threads equal per-worker regions. Work is shared out on `pool`.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_

#include <cstddef>

#include "absl/status/status.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/run_stats.h"
#include "kernels/kernel_args.h"
#include "runtime/parallel_for.h"

namespace attnserve::core {

absl::Status FlashForward(const FlashForwardArgs& args, float* scratch,
                          size_t scratch_floats, ComputePool& pool,
                          const CancelToken& cancel, RunStats* stats);

absl::Status FlashBackward(const FlashBackwardArgs& args, float* scratch,
                           size_t scratch_floats, ComputePool& pool,
                           const CancelToken& cancel, RunStats* stats);

// Whether FlashBackward splits dK/dV and dQ into separate parallel phases
// (fewer kv heads than workers, no pse); the bits are the same either way.
bool UseSplitBackward(const AttentionGeometry& geo);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_
