// FlashAttention forward and backward on tiles (FA2 decomposition), with
// fp32 or bf16 tile products (the plan's Tiling::products; see
// tile_products.h).
//
// Forward, per (batch, kv head): K and V are loaded once (fp32: widened;
// bf16: as they are) and shared by the G query heads of the group; per Sq
// tile an online softmax runs over the Skv tiles, skipping tiles the band
// masks entirely. When the group's query rows fit one tile (G * Sq <=
// tile_q: decode-like shapes) the G heads run stacked as one tile and K/V
// are streamed a tile at a time instead (UseStackedForward).
// Backward, per (batch, kv head): P is recomputed from softmax_max/sum;
// dK/dV accumulate over the group in scratch and are written once, so the
// result is deterministic.
//
// Both return CANCELLED / DEADLINE_EXCEEDED from the token, checked between
// tiles, and INTERNAL when `workspace` is smaller than the tiling's layout
// (Flash*WorkspaceBytes); it is split into args.tiling.threads equal
// per-worker regions. Work is shared out on `pool`.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/run_stats.h"
#include "kernels/kernel_args.h"
#include "runtime/parallel_for.h"

namespace attnserve::core {

// Workspace bytes of a run with `tiling` (all its threads): the kernels'
// own scratch layout, counted.
uint64_t FlashForwardWorkspaceBytes(const AttentionDims& dims,
                                    const Tiling& tiling);
uint64_t FlashBackwardWorkspaceBytes(const AttentionDims& dims,
                                     const Tiling& tiling);

absl::Status FlashForward(const FlashForwardArgs& args, void* workspace,
                          size_t workspace_bytes, ComputePool& pool,
                          const CancelToken& cancel, RunStats* stats);

absl::Status FlashBackward(const FlashBackwardArgs& args, void* workspace,
                           size_t workspace_bytes, ComputePool& pool,
                           const CancelToken& cancel, RunStats* stats);

// Whether FlashForward runs stacked: all G query heads of a kv head as one
// query tile (G * Sq <= tile_q, Sq the longest), one work item per
// (batch, kv head) streaming its K/V tile by tile. Depends on the shape
// only, never on the threads.
bool UseStackedForward(const AttentionDims& dims, const Tiling& tiling);

// Whether FlashBackward splits dK/dV and dQ into separate parallel phases
// (fewer kv heads than workers, no pse); the bits are the same either way.
bool UseSplitBackward(const AttentionGeometry& geo);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_FLASH_ATTENTION_H_
