#include "attnserve/core/engine.h"

#include <algorithm>
#include <vector>

#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "kernels/nsa_attention.h"
#include "runtime/bf16_gemm.h"
#include "runtime/gemm.h"
#include "runtime/head_io.h"
#include "runtime/parallel_for.h"
#include "runtime/vector_math.h"

namespace attnserve::core {
namespace {

// Addressing of a q-like (rows = Sq or T1) or kv-like tensor.
HeadTensor InputHead(const TensorView& t, const AttentionDims& d, int64_t seq,
                     int64_t heads, int64_t cols) {
  HeadTensor h;
  h.data = InputBytes(t.data, t.chunks);
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

template <typename T>
const T* DataOf(const std::optional<TensorView>& t) {
  return t.has_value() ? static_cast<const T*>(t->data) : nullptr;
}

float* Floats(HostTensor& t) {
  return reinterpret_cast<float*>(t.bytes.data());
}

template <typename Plan>
AttentionGeometry GeometryOf(const Plan& plan, const AttentionOptions& o) {
  AttentionGeometry g;
  g.dims = plan.dims;
  g.batches = plan.batches;
  g.tiling = plan.tiling;
  g.mask = plan.mask;
  g.mask_data = DataOf<uint8_t>(o.atten_mask);
  g.pse = plan.pse;
  g.pse_data = DataOf<void>(o.pse);
  g.dropout = plan.dropout;
  g.drop_mask_data = DataOf<uint8_t>(o.drop_mask);
  g.scale = plan.scale;
  return g;
}

// Rows of q-like tensors: Sq (padded) or T1 (TND); of kv-like: Skv or T2.
int64_t QueryRows(const AttentionDims& d) {
  return d.layout == Layout::kTND ? d.t1 : d.s1;
}
int64_t KeyRows(const AttentionDims& d) {
  return d.layout == Layout::kTND ? d.t2 : d.s2;
}

// dpse from the kernel's per-(b, n) partials: summed over b, in order, when
// the pse (or the slopes) is shared by the batches, then narrowed.
HostTensor ReduceDpse(const PseSpec& pse, const AttentionDims& d,
                      const std::vector<float>& plane_partials,
                      const std::vector<double>& slope_partials,
                      BufferPool* buffers) {
  const bool generated = pse.kind == PseSpec::Kind::kAlibi ||
                         pse.kind == PseSpec::Kind::kAlibiSqrt;
  HostTensor out = MakeHostTensor(generated ? DType::kFloat32 : pse.dtype,
                                  pse.shape, buffers);
  if (generated) {
    const bool per_batch = pse.stride_b != 0;
    std::vector<double> sum(static_cast<size_t>(per_batch ? d.b * d.n1 : d.n1));
    for (int64_t b = 0; b < d.b; ++b) {
      for (int64_t n = 0; n < d.n1; ++n) {
        sum[static_cast<size_t>(per_batch ? b * d.n1 + n : n)] +=
            slope_partials[static_cast<size_t>(b * d.n1 + n)];
      }
    }
    float* dst = Floats(out);
    for (size_t i = 0; i < sum.size(); ++i) dst[i] = static_cast<float>(sum[i]);
    return out;
  }
  // External: the partials already have the pse's layout ([Bp][N1][R][C]).
  FromFloat(out.dtype, plane_partials.data(), out.bytes.data(),
            plane_partials.size());
  return out;
}

}  // namespace

Engine::Engine(const EngineOptions& options, const BufferPoolOptions& buffers)
    : pool_(options.workspace_budget_bytes),
      buffers_(buffers),
      intra_op_threads_(std::max(1, options.intra_op_threads)),
      bf16_tile_products_(options.bf16_tile_products),
      compute_(std::make_unique<ComputePool>(intra_op_threads_ - 1)) {
  InitGemmBackend();
}

Engine::~Engine() = default;

std::vector<std::string> Engine::backends() const {
  // The tile-product library, OpenBLAS's kernel for this CPU (logged even
  // when oneDNN runs the tiles), the vector level of the softmax and the
  // bf16 tile products.
  return {InitGemmBackend(), GemmCpuDescription(),
          std::string("softmax-simd:") + SimdLevelName(BestSimdLevel()),
          bf16_tile_products_
              ? Bf16ProductsDescription()
              : std::string("onednn-bf16-matmul:off (disabled by option)")};
}

absl::Status Engine::CheckProducts(TileProducts products) const {
  if (products != TileProducts::kBFloat16) return absl::OkStatus();
  if (!bf16_tile_products_) {
    return absl::FailedPreconditionError(
        "the plan runs bf16 tile products, which this engine has turned "
        "off: prepare calls with allow_bf16 = engine.bf16_tile_products()");
  }
  if (!Bf16Products().available) {
    return absl::FailedPreconditionError(
        "the plan runs bf16 tile products, which this host lacks: " +
        Bf16Products().detail);
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardResult> Engine::Run(const ForwardCall& call,
                                          const CancelToken& cancel) {
  return RunForward(call.args(), call.plan(), cancel);
}

absl::StatusOr<ForwardResult> Engine::RunForward(const ForwardArgs& args,
                                                 const ForwardPlan& plan,
                                                 const CancelToken& cancel) {
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_RETURN_IF_ERROR(CheckProducts(plan.tiling.products));
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  const AttentionDims& d = plan.dims;
  ForwardResult result;
  // Not zero-filled: the forward writes every element of its outputs (each
  // row of every (batch, head) of out and all 8 lanes of its softmax_max /
  // softmax_sum), and a memory-bound forward would spend a fifth of its
  // time clearing them first.
  result.attention_out = MakeUninitializedHostTensor(
      plan.outputs[0].dtype, plan.outputs[0].shape, &buffers_);
  result.softmax_max = MakeUninitializedHostTensor(
      DType::kFloat32, plan.outputs[1].shape, &buffers_);
  result.softmax_sum = MakeUninitializedHostTensor(
      DType::kFloat32, plan.outputs[2].shape, &buffers_);

  FlashForwardArgs k;
  k.geo = GeometryOf(plan, args.options);
  k.q = InputHead(args.query, d, QueryRows(d), d.n1, d.d);
  k.k = InputHead(args.key, d, KeyRows(d), d.n2, d.d);
  k.v = InputHead(args.value, d, KeyRows(d), d.n2, d.dv);
  k.out = OutputHead(result.attention_out, d, QueryRows(d), d.n1, d.dv);
  k.softmax_max = Floats(result.softmax_max);
  k.softmax_sum = Floats(result.softmax_sum);
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(FlashForward(k, lease.floats(), lease.size(), *compute_,
                                    cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

absl::StatusOr<BackwardResult> Engine::Run(const BackwardCall& call,
                                           const CancelToken& cancel) {
  const BackwardArgs& args = call.args();
  const BackwardPlan& plan = call.plan();
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_RETURN_IF_ERROR(CheckProducts(plan.tiling.products));
  // Without residuals, recompute them with a forward pass first.
  ForwardResult recomputed;
  const TensorView* softmax_max =
      args.softmax_max ? &*args.softmax_max : nullptr;
  const TensorView* softmax_sum =
      args.softmax_sum ? &*args.softmax_sum : nullptr;
  const TensorView* attention_in =
      args.attention_in ? &*args.attention_in : nullptr;
  TensorView rec_max, rec_sum, rec_out;
  if (plan.recompute.has_value()) {
    const ForwardArgs fwd{args.query, args.key, args.value, args.options};
    ATTN_ASSIGN_OR_RETURN(recomputed, RunForward(fwd, *plan.recompute, cancel));
    rec_max = recomputed.softmax_max.view();
    rec_sum = recomputed.softmax_sum.view();
    rec_out = recomputed.attention_out.view();
    softmax_max = &rec_max;
    softmax_sum = &rec_sum;
    attention_in = &rec_out;
  }

  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  const AttentionDims& d = plan.dims;
  BackwardResult result;
  result.dq =
      MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape, &buffers_);
  result.dk =
      MakeHostTensor(plan.outputs[1].dtype, plan.outputs[1].shape, &buffers_);
  result.dv =
      MakeHostTensor(plan.outputs[2].dtype, plan.outputs[2].shape, &buffers_);

  FlashBackwardArgs k;
  k.geo = GeometryOf(plan, args.options);
  k.q = InputHead(args.query, d, QueryRows(d), d.n1, d.d);
  k.k = InputHead(args.key, d, KeyRows(d), d.n2, d.d);
  k.v = InputHead(args.value, d, KeyRows(d), d.n2, d.dv);
  k.dy = InputHead(args.dy, d, QueryRows(d), d.n1, d.dv);
  k.out = InputHead(*attention_in, d, QueryRows(d), d.n1, d.dv);
  k.softmax_max = static_cast<const float*>(softmax_max->data);
  k.softmax_sum = static_cast<const float*>(softmax_sum->data);
  k.dq = OutputHead(result.dq, d, QueryRows(d), d.n1, d.d);
  k.dk = OutputHead(result.dk, d, KeyRows(d), d.n2, d.d);
  k.dv = OutputHead(result.dv, d, KeyRows(d), d.n2, d.dv);
  // dpse partials, in the pse's own layout (see FlashBackwardArgs).
  std::vector<float> dpse_partial;
  std::vector<double> dslope_partial;
  if (plan.pse.kind == PseSpec::Kind::kExternal) {
    int64_t n = 1;
    for (int64_t dim : plan.pse.shape) n *= dim;
    dpse_partial.assign(static_cast<size_t>(n), 0.0f);
    k.dpse_partial = dpse_partial.data();
  } else if (plan.pse.kind != PseSpec::Kind::kNone) {
    dslope_partial.assign(static_cast<size_t>(d.b * d.n1), 0.0);
    k.dslope_partial = dslope_partial.data();
  }
  result.stats = recomputed.stats;
  result.stats.workspace_bytes =
      std::max<uint64_t>(lease.size(), recomputed.stats.workspace_bytes);
  ATTN_RETURN_IF_ERROR(FlashBackward(k, lease.floats(), lease.size(), *compute_,
                                     cancel, &result.stats));
  if (plan.pse.kind != PseSpec::Kind::kNone) {
    result.dpse =
        ReduceDpse(plan.pse, d, dpse_partial, dslope_partial, &buffers_);
  }
  result.stats.flops = call.flops();
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

absl::StatusOr<ForwardResult> Engine::Run(const NsaForwardCall& call,
                                          const CancelToken& cancel) {
  const NsaForwardArgs& args = call.args();
  const NsaForwardPlan& plan = call.plan();
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_RETURN_IF_ERROR(CheckProducts(plan.products));
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  ForwardResult result;
  result.attention_out =
      MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape, &buffers_);
  result.softmax_max =
      MakeHostTensor(DType::kFloat32, plan.outputs[1].shape, &buffers_);
  result.softmax_sum =
      MakeHostTensor(DType::kFloat32, plan.outputs[2].shape, &buffers_);
  NsaKernelArgs k =
      NsaArgs(plan.dims, args.options, plan.scale, plan.threads, args.query,
              args.key, args.value, args.topk_indices);
  k.token_tile = plan.token_tile;
  k.products = plan.products;
  k.out = result.attention_out.bytes.data();
  k.softmax_max = reinterpret_cast<float*>(result.softmax_max.bytes.data());
  k.softmax_sum = reinterpret_cast<float*>(result.softmax_sum.bytes.data());
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(NsaForward(k, lease.floats(), lease.size(), *compute_,
                                  cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

absl::StatusOr<BackwardResult> Engine::Run(const NsaBackwardCall& call,
                                           const CancelToken& cancel) {
  const NsaBackwardArgs& args = call.args();
  const NsaBackwardPlan& plan = call.plan();
  ATTN_RETURN_IF_ERROR(cancel.Check());
  ATTN_RETURN_IF_ERROR(CheckProducts(plan.products));
  ATTN_ASSIGN_OR_RETURN(WorkspaceLease lease,
                        pool_.Acquire(plan.workspace_bytes));
  BackwardResult result;
  result.dq =
      MakeHostTensor(plan.outputs[0].dtype, plan.outputs[0].shape, &buffers_);
  result.dk =
      MakeHostTensor(plan.outputs[1].dtype, plan.outputs[1].shape, &buffers_);
  result.dv =
      MakeHostTensor(plan.outputs[2].dtype, plan.outputs[2].shape, &buffers_);
  NsaKernelArgs k =
      NsaArgs(plan.dims, args.options, plan.scale, plan.threads, args.query,
              args.key, args.value, args.topk_indices);
  k.chunk_tokens = plan.chunk_tokens;
  k.token_tile = plan.token_tile;
  k.products = plan.products;
  k.out_in = args.attention_out.data;
  k.dy = args.attention_out_grad.data;
  k.max_in = static_cast<const float*>(args.softmax_max.data);
  k.sum_in = static_cast<const float*>(args.softmax_sum.data);
  k.dq = result.dq.bytes.data();
  k.dk = result.dk.bytes.data();
  k.dv = result.dv.bytes.data();
  result.stats.workspace_bytes = lease.size();
  ATTN_RETURN_IF_ERROR(NsaBackward(k, lease.floats(), lease.size(), *compute_,
                                   cancel, &result.stats));
  result.stats.flops = plan.flops;
  return result;
}

}  // namespace attnserve::core
