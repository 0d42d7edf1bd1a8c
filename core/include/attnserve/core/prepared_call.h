// An operator call, validated and planned: the one thing the engine runs.
//
// Preparing a call checks its arguments (the operator's Plan function) and
// plans it for the threads a ThreadPolicy grants it; the call then owns its
// tensor views, its resolved specs and its plan together, so a run always
// uses the plan made from its own arguments. Its figures (workspace, FLOPs,
// outputs) are those of the whole run, and the run reports the same:
//
//   ForwardArgs args;  // views of caller-owned bytes
//   ...
//   ATTN_ASSIGN_OR_RETURN(
//       ForwardCall call,
//       ForwardCall::Prepare(std::move(args), ThreadPolicy(8, 2.5e8)));
//   call.workspace_bytes();   // what the run leases; 0 copies made
//   ATTN_ASSIGN_OR_RETURN(ForwardResult out, engine.Run(call, token));
//   // out.stats.workspace_bytes == call.workspace_bytes()
//
// The bytes the views point to stay the caller's and must outlive the call.
// A prepared call is immutable: any number of threads may read it, and it
// may be run more than once.
//
// Each operator is a small descriptor type naming its arguments, plan and
// result; code that handles every operator alike (the server's pipeline) is
// written once over PreparedCall<Op>.
#ifndef ATTNSERVE_CORE_PREPARED_CALL_H_
#define ATTNSERVE_CORE_PREPARED_CALL_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/run_stats.h"
#include "attnserve/core/tensor.h"

namespace attnserve::core {

// What the forward operators return.
struct ForwardResult {
  HostTensor attention_out;
  HostTensor softmax_max;  // FLOAT32 [B,N1,S1,8] (NSA, TND: [T1,N1,8]).
  HostTensor softmax_sum;  // The same shape.
  RunStats stats;
};

// What the grad operators return.
struct BackwardResult {
  HostTensor dq;
  HostTensor dk;
  HostTensor dv;
  // Gradient of pse: the pse's own shape and dtype (external pse) or the
  // slopes' shape, FLOAT32 (pse_type 2/3); unset when no pse was sent (and
  // always for NSA).
  std::optional<HostTensor> dpse;
  RunStats stats;
};

// The operators: what each takes, is planned into and returns. kName is the
// CANN operator's name without the "aclnn" prefix (and the RPC's name).
template <typename ArgsT, typename PlanT, typename ResultT>
struct Operator {
  using Args = ArgsT;
  using Plan = PlanT;
  using Result = ResultT;
};
struct FlashAttentionScoreOp
    : Operator<ForwardArgs, ForwardPlan, ForwardResult> {
  static constexpr char kName[] = "FlashAttentionScore";
};
struct FlashAttentionScoreGradOp
    : Operator<BackwardArgs, BackwardPlan, BackwardResult> {
  static constexpr char kName[] = "FlashAttentionScoreGrad";
};
struct NsaSelectedAttentionOp
    : Operator<NsaForwardArgs, NsaForwardPlan, ForwardResult> {
  static constexpr char kName[] = "NsaSelectedAttention";
};
struct NsaSelectedAttentionGradOp
    : Operator<NsaBackwardArgs, NsaBackwardPlan, BackwardResult> {
  static constexpr char kName[] = "NsaSelectedAttentionGrad";
};

template <typename Op>
class PreparedCall {
 public:
  using Args = typename Op::Args;
  using Plan = typename Op::Plan;
  using Result = typename Op::Result;

  // Validates `args` and plans the call for the threads `threads` grants it
  // and, with `allow_bf16`, bf16 tile products for BFLOAT16 where the host
  // has them (plan.h, TileProducts; pass Engine::bf16_tile_products()).
  // INVALID_ARGUMENT / UNIMPLEMENTED naming the field (FieldOf) otherwise.
  // Pure and thread-safe.
  static absl::StatusOr<PreparedCall> Prepare(
      Args args, const ThreadPolicy& threads = ThreadPolicy(),
      bool allow_bf16 = true);

  PreparedCall(PreparedCall&&) noexcept = default;
  PreparedCall& operator=(PreparedCall&&) noexcept = default;
  PreparedCall(const PreparedCall&) = delete;
  PreparedCall& operator=(const PreparedCall&) = delete;

  const Args& args() const { return args_; }
  const Plan& plan() const { return plan_; }

  // Threads the run is planned for (its own worker included).
  int threads() const { return threads_; }
  // Workspace the run leases (ExecutionStats.workspace_bytes).
  uint64_t workspace_bytes() const { return workspace_bytes_; }
  // FLOPs of the whole run, a recomputed forward included.
  double flops() const { return flops_; }
  // Name, dtype and shape of each output, in the result's order.
  const std::vector<OutputSpec>& outputs() const { return plan_.outputs; }
  // Bytes of the outputs; saturates at UINT64_MAX.
  uint64_t output_bytes() const { return output_bytes_; }
  // Most bytes a run allocates at once: workspace, outputs, and the
  // tensors of a recomputed forward; saturates at UINT64_MAX.
  uint64_t memory_bytes() const { return memory_bytes_; }

 private:
  PreparedCall(Args args, Plan plan);

  Args args_;
  Plan plan_;
  int threads_ = 1;
  uint64_t workspace_bytes_ = 0;
  double flops_ = 0;
  uint64_t output_bytes_ = 0;
  uint64_t memory_bytes_ = 0;
};

// Defined for these four operators only (prepared_call.cc).
extern template class PreparedCall<FlashAttentionScoreOp>;
extern template class PreparedCall<FlashAttentionScoreGradOp>;
extern template class PreparedCall<NsaSelectedAttentionOp>;
extern template class PreparedCall<NsaSelectedAttentionGradOp>;

using ForwardCall = PreparedCall<FlashAttentionScoreOp>;
using BackwardCall = PreparedCall<FlashAttentionScoreGradOp>;
using NsaForwardCall = PreparedCall<NsaSelectedAttentionOp>;
using NsaBackwardCall = PreparedCall<NsaSelectedAttentionGradOp>;

// Bytes of `outputs`; saturates at UINT64_MAX instead of overflowing.
uint64_t OutputBytes(const std::vector<OutputSpec>& outputs);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_PREPARED_CALL_H_
