// The compute engine: runs prepared calls (prepared_call.h).
//
//   Engine engine(EngineOptions{.workspace_budget_bytes = 1 << 30,
//                               .intra_op_threads = 8});
//   ATTN_ASSIGN_OR_RETURN(ForwardCall call,
//                         ForwardCall::Prepare(std::move(args), 8));
//   CancelToken token;
//   ATTN_ASSIGN_OR_RETURN(ForwardResult out, engine.Run(call, token));
//
// A run leases the call's workspace from the engine's pool for its
// duration, takes the outputs from the engine's buffer pool, checks the cancel
// token between tiles, and returns CANCELLED / DEADLINE_EXCEEDED /
// RESOURCE_EXHAUSTED as fit. A call prepared with bf16 tile products on an
// engine without them is FAILED_PRECONDITION (prepare with
// engine.bf16_tile_products()). Thread-safe: many runs may proceed at once.
#ifndef ATTNSERVE_CORE_ENGINE_H_
#define ATTNSERVE_CORE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/workspace_pool.h"

namespace attnserve::core {
class ComputePool;
}  // namespace attnserve::core

namespace attnserve::core {

struct EngineOptions {
  // Cap on the bytes of workspace leased at once; 0 = unlimited.
  uint64_t workspace_budget_bytes = 0;
  // Threads one run may use (the caller's plus helpers the engine owns);
  // prepare calls for at most this many.
  int intra_op_threads = 1;
  // Whether BFLOAT16 requests may run bf16 tile products where the host has
  // them (plan.h, TileProducts); false keeps every request on fp32 products.
  // Prepare calls with the same choice:
  // ForwardCall::Prepare(args, threads, engine.bf16_tile_products()).
  bool bf16_tile_products = true;
};

class Engine {
 public:
  // `buffers` configures the pool the outputs come from (buffer_pool()).
  explicit Engine(const EngineOptions& options,
                  const BufferPoolOptions& buffers = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `call` on the calling thread and any idle helper threads (at most
  // call.threads() in all). The result's stats report call.workspace_bytes()
  // and call.flops(). NSA forward outputs are attention_out [T1, N1, Dv]
  // and softmax_max/sum FLOAT32 [T1, N1, 8]; the NSA grad's are dq, dk, dv.
  absl::StatusOr<ForwardResult> Run(const ForwardCall& call,
                                    const CancelToken& cancel);
  absl::StatusOr<BackwardResult> Run(const BackwardCall& call,
                                     const CancelToken& cancel);
  absl::StatusOr<ForwardResult> Run(const NsaForwardCall& call,
                                    const CancelToken& cancel);
  absl::StatusOr<BackwardResult> Run(const NsaBackwardCall& call,
                                     const CancelToken& cancel);

  WorkspacePool& workspace_pool() { return pool_; }
  // Outputs' buffers; they return here when their last owner drops them.
  BufferPool& buffer_pool() { return buffers_; }
  int intra_op_threads() const { return intra_op_threads_; }
  bool bf16_tile_products() const { return bf16_tile_products_; }
  // What computes: the tile-product library (e.g. "onednn-sgemm:2.6.3"),
  // OpenBLAS's kernel for this CPU, the softmax's vector level and the bf16
  // tile products ("onednn-bf16-matmul:brg:avx512_core_amx_bf16", or
  // "onednn-bf16-matmul:off (<why>)" when the host has none or the engine
  // was configured without them).
  std::vector<std::string> backends() const;

 private:
  absl::StatusOr<ForwardResult> RunForward(const ForwardArgs& args,
                                           const ForwardPlan& plan,
                                           const CancelToken& cancel);
  // OK unless `products` are bf16 and this engine or host cannot run them.
  absl::Status CheckProducts(TileProducts products) const;

  WorkspacePool pool_;
  BufferPool buffers_;
  const int intra_op_threads_;
  const bool bf16_tile_products_;
  std::unique_ptr<ComputePool> compute_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_ENGINE_H_
