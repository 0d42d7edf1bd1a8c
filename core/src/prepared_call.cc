#include "attnserve/core/prepared_call.h"

#include <algorithm>

#include "attnserve/core/status_macros.h"

namespace attnserve::core {
namespace {

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

// The operator's Plan function.
absl::StatusOr<ForwardPlan> PlanOf(const ForwardArgs& args,
                                   const ThreadPolicy& threads,
                                   bool allow_bf16) {
  return PlanForward(args, threads, allow_bf16);
}
absl::StatusOr<BackwardPlan> PlanOf(const BackwardArgs& args,
                                    const ThreadPolicy& threads,
                                    bool allow_bf16) {
  return PlanBackward(args, threads, allow_bf16);
}
absl::StatusOr<NsaForwardPlan> PlanOf(const NsaForwardArgs& args,
                                      const ThreadPolicy& threads,
                                      bool allow_bf16) {
  return PlanNsaForward(args, threads, allow_bf16);
}
absl::StatusOr<NsaBackwardPlan> PlanOf(const NsaBackwardArgs& args,
                                       const ThreadPolicy& threads,
                                       bool allow_bf16) {
  return PlanNsaBackward(args, threads, allow_bf16);
}

int ThreadsOf(const ForwardPlan& plan) { return plan.tiling.threads; }
int ThreadsOf(const BackwardPlan& plan) { return plan.tiling.threads; }
int ThreadsOf(const NsaForwardPlan& plan) { return plan.threads; }
int ThreadsOf(const NsaBackwardPlan& plan) { return plan.threads; }

// The forward a grad without residuals runs first, if any.
const ForwardPlan* RecomputeOf(const BackwardPlan& plan) {
  return plan.recompute.has_value() ? &*plan.recompute : nullptr;
}
template <typename Plan>
const ForwardPlan* RecomputeOf(const Plan& /*plan*/) {
  return nullptr;
}

}  // namespace

uint64_t OutputBytes(const std::vector<OutputSpec>& outputs) {
  uint64_t total = 0;
  for (const OutputSpec& spec : outputs) {
    absl::StatusOr<uint64_t> bytes =
        CheckedByteSize(spec.dtype, spec.shape, spec.name);
    total = SaturatingAdd(total, bytes.ok() ? *bytes : UINT64_MAX);
  }
  return total;
}

template <typename Op>
absl::StatusOr<PreparedCall<Op>> PreparedCall<Op>::Prepare(
    Args args, const ThreadPolicy& threads, bool allow_bf16) {
  ATTN_ASSIGN_OR_RETURN(Plan plan, PlanOf(args, threads, allow_bf16));
  return PreparedCall(std::move(args), std::move(plan));
}

template <typename Op>
PreparedCall<Op>::PreparedCall(Args args, Plan plan)
    : args_(std::move(args)), plan_(std::move(plan)) {
  threads_ = ThreadsOf(plan_);
  workspace_bytes_ = plan_.workspace_bytes;
  flops_ = plan_.flops;
  output_bytes_ = OutputBytes(plan_.outputs);
  // The run holds its outputs and its workspace; a recomputed forward's
  // outputs stay alive through the grad, whose workspace is leased after
  // the forward's is returned.
  uint64_t held = output_bytes_;
  if (const ForwardPlan* recompute = RecomputeOf(plan_)) {
    workspace_bytes_ = std::max(workspace_bytes_, recompute->workspace_bytes);
    flops_ += recompute->flops;
    held = SaturatingAdd(held, OutputBytes(recompute->outputs));
  }
  memory_bytes_ = SaturatingAdd(held, workspace_bytes_);
}

template class PreparedCall<FlashAttentionScoreOp>;
template class PreparedCall<FlashAttentionScoreGradOp>;
template class PreparedCall<NsaSelectedAttentionOp>;
template class PreparedCall<NsaSelectedAttentionGradOp>;

}  // namespace attnserve::core
