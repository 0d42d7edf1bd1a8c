#include "attnserve/core/engine.h"

#include <algorithm>

#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "kernels/nsa_attention.h"
#include "plan/layout.h"
#include "runtime/gemm.h"
#include "runtime/parallel_for.h"

namespace attnserve::core {
namespace {

HeadTensor InputHead(const TensorView& t, const AttentionDims& d, int64_t seq,
                     int64_t heads, int64_t cols) {
  HeadTensor h;
  h.data = t.data;
  h.strides = StridesFor(d.layout, d.b, seq, heads, cols);
  h.dtype = t.dtype;
  h.cols = cols;
  return h;
}

HeadTensor OutputHead(HostTensor& t, const AttentionDims& d, int64_t seq,
                      int64_t heads, int64_t cols) {
  HeadTensor h = InputHead(t.view(), d, seq, heads, cols);
  h.mutable_data = t.bytes.data();
  return h;
}

const uint8_t* MaskData(const AttentionOptions& o) {
  return o.atten_mask.has_value()
             ? static_cast<const uint8_t*>(o.atten_mask->data)
             : nullptr;
}

float* Floats(HostTensor& t) {
  return reinterpret_cast<float*>(t.bytes.data());
}

}  // namespace

Engine::Engine(const EngineOptions& options)
    : pool_(options.workspace_budget_bytes),
      intra_op_threads_(std::max(1, options.intra_op_threads)),
      compute_(std::make_unique<ComputePool>(intra_op_threads_ - 1)) {
  InitGemmBackend();
}

Engine::~Engine() = default;

std::vector<std::string> Engine::backends() const {
  return {InitGemmBackend()};
}

absl::StatusOr<ForwardResult> Engine::RunForward(const ForwardArgs& args,
                                                 const ForwardPlan& plan,
                                                 const CancelToken& cancel) {
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  const AttentionDims& d = plan.dims;
  ForwardResult result;
  result.attention_out =
      MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape);
  result.softmax_max = MakeHostTensor(DType::kFloat32, plan.outputs[1].shape);
  result.softmax_sum = MakeHostTensor(DType::kFloat32, plan.outputs[2].shape);

  FlashForwardArgs k;
  k.dims = d;
  k.tiling = plan.tiling;
  k.mask = plan.mask;
  k.mask_data = MaskData(args.options);
  k.scale = plan.scale;
  k.q = InputHead(args.query, d, d.s1, d.n1, d.d);
  k.k = InputHead(args.key, d, d.s2, d.n2, d.d);
  k.v = InputHead(args.value, d, d.s2, d.n2, d.dv);
  k.out = OutputHead(result.attention_out, d, d.s1, d.n1, d.dv);
  k.softmax_max = Floats(result.softmax_max);
  k.softmax_sum = Floats(result.softmax_sum);
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(FlashForward(k, lease.floats(),
                                    lease.size() / sizeof(float), *compute_,
                                    cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

absl::StatusOr<BackwardResult> Engine::RunBackward(const BackwardArgs& args,
                                                   const BackwardPlan& plan,
                                                   const CancelToken& cancel) {
  ATTN_RETURN_IF_ERROR(cancel.Check());
  // Without residuals, recompute them with a forward pass first.
  ForwardResult recomputed;
  const TensorView* softmax_max =
      args.softmax_max ? &*args.softmax_max : nullptr;
  const TensorView* softmax_sum =
      args.softmax_sum ? &*args.softmax_sum : nullptr;
  const TensorView* attention_in =
      args.attention_in ? &*args.attention_in : nullptr;
  TensorView rec_max, rec_sum, rec_out;
  double extra_flops = 0;
  if (!plan.has_residuals) {
    const ForwardArgs fwd{args.query, args.key, args.value, args.options};
    ATTN_ASSIGN_OR_RETURN(ForwardPlan fwd_plan,
                          PlanForward(fwd, plan.tiling.threads));
    ATTN_ASSIGN_OR_RETURN(recomputed, RunForward(fwd, fwd_plan, cancel));
    rec_max = recomputed.softmax_max.view();
    rec_sum = recomputed.softmax_sum.view();
    rec_out = recomputed.attention_out.view();
    softmax_max = &rec_max;
    softmax_sum = &rec_sum;
    attention_in = &rec_out;
    extra_flops = fwd_plan.flops;
  }

  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  const AttentionDims& d = plan.dims;
  BackwardResult result;
  result.dq = MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape);
  result.dk = MakeHostTensor(plan.outputs[1].dtype, plan.outputs[1].shape);
  result.dv = MakeHostTensor(plan.outputs[2].dtype, plan.outputs[2].shape);

  FlashBackwardArgs k;
  k.dims = d;
  k.tiling = plan.tiling;
  k.mask = plan.mask;
  k.mask_data = MaskData(args.options);
  k.scale = plan.scale;
  k.q = InputHead(args.query, d, d.s1, d.n1, d.d);
  k.k = InputHead(args.key, d, d.s2, d.n2, d.d);
  k.v = InputHead(args.value, d, d.s2, d.n2, d.dv);
  k.dy = InputHead(args.dy, d, d.s1, d.n1, d.dv);
  k.out = InputHead(*attention_in, d, d.s1, d.n1, d.dv);
  k.softmax_max = static_cast<const float*>(softmax_max->data);
  k.softmax_sum = static_cast<const float*>(softmax_sum->data);
  k.dq = OutputHead(result.dq, d, d.s1, d.n1, d.d);
  k.dk = OutputHead(result.dk, d, d.s2, d.n2, d.d);
  k.dv = OutputHead(result.dv, d, d.s2, d.n2, d.dv);
  result.stats = recomputed.stats;
  result.stats.workspace_bytes =
      std::max<uint64_t>(lease.size(), recomputed.stats.workspace_bytes);
  ATTN_RETURN_IF_ERROR(FlashBackward(k, lease.floats(),
                                     lease.size() / sizeof(float), *compute_,
                                     cancel, &result.stats));
  result.stats.flops = plan.flops + extra_flops;
  return result;
}

namespace {

// Batch offsets with a leading 0 from cumulative end offsets.
std::vector<int64_t> BatchStarts(const std::vector<int64_t>& ends) {
  std::vector<int64_t> starts = {0};
  starts.insert(starts.end(), ends.begin(), ends.end());
  return starts;
}

NsaKernelArgs NsaArgs(const NsaDims& dims, const NsaOptions& o, float scale,
                      int threads, const TensorView& q, const TensorView& k,
                      const TensorView& v, const TensorView& topk) {
  NsaKernelArgs a;
  a.dims = dims;
  a.scale = scale;
  a.threads = threads;
  a.q_start = BatchStarts(o.actual_seq_qlen);
  a.kv_start = BatchStarts(o.actual_seq_kvlen);
  a.topk = topk.data;
  a.query = q.data;
  a.key = k.data;
  a.value = v.data;
  return a;
}

}  // namespace

absl::StatusOr<ForwardResult> Engine::RunNsaForward(const NsaForwardArgs& args,
                                                    const NsaForwardPlan& plan,
                                                    const CancelToken& cancel) {
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  ForwardResult result;
  result.attention_out =
      MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape);
  result.softmax_max = MakeHostTensor(DType::kFloat32, plan.outputs[1].shape);
  result.softmax_sum = MakeHostTensor(DType::kFloat32, plan.outputs[2].shape);
  NsaKernelArgs k =
      NsaArgs(plan.dims, args.options, plan.scale, plan.threads, args.query,
              args.key, args.value, args.topk_indices);
  k.token_tile = plan.token_tile;
  k.out = result.attention_out.bytes.data();
  k.softmax_max = reinterpret_cast<float*>(result.softmax_max.bytes.data());
  k.softmax_sum = reinterpret_cast<float*>(result.softmax_sum.bytes.data());
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(NsaForward(k, lease.floats(),
                                  lease.size() / sizeof(float), *compute_,
                                  cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

absl::StatusOr<BackwardResult> Engine::RunNsaBackward(
    const NsaBackwardArgs& args, const NsaBackwardPlan& plan,
    const CancelToken& cancel) {
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  BackwardResult result;
  result.dq = MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape);
  result.dk = MakeHostTensor(plan.outputs[1].dtype, plan.outputs[1].shape);
  result.dv = MakeHostTensor(plan.outputs[2].dtype, plan.outputs[2].shape);
  NsaKernelArgs k =
      NsaArgs(plan.dims, args.options, plan.scale, plan.threads, args.query,
              args.key, args.value, args.topk_indices);
  k.chunk_tokens = plan.chunk_tokens;
  k.token_tile = plan.token_tile;
  k.out_in = args.attention_out.data;
  k.dy = args.attention_out_grad.data;
  k.max_in = static_cast<const float*>(args.softmax_max.data);
  k.sum_in = static_cast<const float*>(args.softmax_sum.data);
  k.dq = result.dq.bytes.data();
  k.dk = result.dk.bytes.data();
  k.dv = result.dv.bytes.data();
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(NsaBackward(k, lease.floats(),
                                   lease.size() / sizeof(float), *compute_,
                                   cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

}  // namespace attnserve::core
