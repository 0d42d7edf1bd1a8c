// The compute engine: phase two of the two-phase API.
//
//   Engine engine(EngineOptions{.workspace_budget_bytes = 1 << 30});
//   ATTN_ASSIGN_OR_RETURN(ForwardPlan plan, PlanForward(args));
//   CancelToken token;
//   ATTN_ASSIGN_OR_RETURN(ForwardResult out,
//                         engine.RunForward(args, plan, token));
//
// Run* must be given the plan made from the same args (and this engine's
// bf16_tile_products(); a bf16 plan on an engine without them is
// FAILED_PRECONDITION). They lease their
// workspace from the engine's pool for the duration of the call, check the
// cancel token between tiles, and return CANCELLED / DEADLINE_EXCEEDED /
// RESOURCE_EXHAUSTED as fit. Thread-safe: many runs may proceed at once.
#ifndef ATTNSERVE_CORE_ENGINE_H_
#define ATTNSERVE_CORE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"
#include "attnserve/core/workspace_pool.h"

namespace attnserve::core {
class ComputePool;
}  // namespace attnserve::core

namespace attnserve::core {

struct EngineOptions {
  // Cap on the bytes of workspace leased at once; 0 = unlimited.
  uint64_t workspace_budget_bytes = 0;
  // Threads one request may use (the caller's plus helpers the engine owns).
  // Plan with the same number: PlanForward(args, engine.intra_op_threads()).
  int intra_op_threads = 1;
  // Whether BFLOAT16 requests may run bf16 tile products where the host has
  // them (plan.h, TileProducts); false keeps every request on fp32 products.
  // Plan with the same choice: PlanForward(args, threads,
  // engine.bf16_tile_products()).
  bool bf16_tile_products = true;
};

struct RunStats {
  uint64_t workspace_bytes = 0;
  double flops = 0;
  // Tiles computed and tiles skipped as fully masked.
  int64_t tiles_computed = 0;
  int64_t tiles_skipped = 0;
};

struct ForwardResult {
  HostTensor attention_out;
  HostTensor softmax_max;  // FLOAT32 [B,N1,S1,8].
  HostTensor softmax_sum;  // FLOAT32 [B,N1,S1,8].
  RunStats stats;
};

struct BackwardResult {
  HostTensor dq;
  HostTensor dk;
  HostTensor dv;
  // Gradient of pse: the pse's own shape and dtype (external pse) or the
  // slopes' shape, FLOAT32 (pse_type 2/3); unset when no pse was sent.
  std::optional<HostTensor> dpse;
  RunStats stats;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  absl::StatusOr<ForwardResult> RunForward(const ForwardArgs& args,
                                           const ForwardPlan& plan,
                                           const CancelToken& cancel);
  absl::StatusOr<BackwardResult> RunBackward(const BackwardArgs& args,
                                             const BackwardPlan& plan,
                                             const CancelToken& cancel);

  // NSA selected attention (nsa.h). The forward returns attention_out
  // [T1, N1, Dv] and softmax_max/sum FLOAT32 [T1, N1, 8]; the grad returns
  // dq, dk, dv (dpse unset). stats.tiles_computed / tiles_skipped count the
  // (token, kv head) pairs that attended something / nothing.
  absl::StatusOr<ForwardResult> RunNsaForward(const NsaForwardArgs& args,
                                              const NsaForwardPlan& plan,
                                              const CancelToken& cancel);
  absl::StatusOr<BackwardResult> RunNsaBackward(const NsaBackwardArgs& args,
                                                const NsaBackwardPlan& plan,
                                                const CancelToken& cancel);

  WorkspacePool& workspace_pool() { return pool_; }
  int intra_op_threads() const { return intra_op_threads_; }
  bool bf16_tile_products() const { return bf16_tile_products_; }
  // What computes: the tile-product library (e.g. "onednn-sgemm:2.6.3"),
  // OpenBLAS's kernel for this CPU, the softmax's vector level and the bf16
  // tile products ("onednn-bf16-matmul:brg:avx512_core_amx_bf16", or
  // "onednn-bf16-matmul:off (<why>)" when the host has none or the engine
  // was configured without them).
  std::vector<std::string> backends() const;

 private:
  // OK unless `products` are bf16 and this engine or host cannot run them.
  absl::Status CheckProducts(TileProducts products) const;

  WorkspacePool pool_;
  const int intra_op_threads_;
  const bool bf16_tile_products_;
  std::unique_ptr<ComputePool> compute_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_ENGINE_H_
