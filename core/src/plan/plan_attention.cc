// PlanForward / PlanBackward: every constraint of the FlashAttentionScore
// family, checked in one place (the resolve_*.cc steps), then the tiling,
// the workspace size (the kernels' own layout, counted) and the output
// specs.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/status_macros.h"
#include "kernels/flash_attention.h"
#include "plan/checks.h"
#include "plan/layout.h"
#include "plan/resolve.h"

namespace attnserve::core {
namespace {

// Tile sizes: a 128 x 128 score tile (64 KiB) and its Q, O and K/V slices
// stay in L2. Measured with attnbench: 128-row query tiles amortize the
// GEMM's packing of each key tile twice as well as 64-row ones; 256 rows
// gain little more and make causal skipping coarser.
constexpr int64_t kTileQ = 128;
constexpr int64_t kTileKv = 128;
constexpr int64_t kMaxStartIdx = 2147483647;
// keep_prob is used as float32 and divided by: the smallest normal float32
// keeps 1/keep_prob finite (about 8.5e37) on every path, flushed
// subnormals included.
constexpr float kMinKeepProb = FLT_MIN;

double ForwardFlops(const AttentionDims& d,
                    const std::vector<BatchSpan>& batches) {
  double cells = 0;
  for (const BatchSpan& s : batches) {
    cells += static_cast<double>(s.s1) * static_cast<double>(s.s2);
  }
  return 2.0 * static_cast<double>(d.n1) * cells *
         static_cast<double>(d.d + d.dv);
}

Tiling MakeTiling(const AttentionDims& d, int threads, bool allow_bf16) {
  return Tiling{kTileQ, kTileKv, threads < 1 ? 1 : threads,
                ChooseTileProducts(d.dtype, allow_bf16)};
}

// Everything but the tensors specific to one direction.
struct CommonPlan {
  AttentionDims dims;
  std::vector<BatchSpan> batches;
  MaskSpec mask;
  PseSpec pse;
  DropoutSpec dropout;
  float scale = 1.0f;
};

absl::StatusOr<CommonPlan> PlanCommon(const TensorView& q, const TensorView& k,
                                      const TensorView& v,
                                      const AttentionOptions& o,
                                      InputDTypes accepted) {
  CommonPlan c;
  ATTN_RETURN_IF_ERROR(CheckScalarOptions(o));
  ATTN_ASSIGN_OR_RETURN(c.dims, ResolveDims(q, k, v, o, accepted));
  ATTN_ASSIGN_OR_RETURN(c.batches, ResolveBatches(o, &c.dims));
  c.scale = static_cast<float>(o.scale_value);
  ATTN_ASSIGN_OR_RETURN(c.mask, ResolveMask(o, c.dims, c.batches));
  ATTN_ASSIGN_OR_RETURN(c.pse, ResolvePse(o, c.dims, c.batches, c.scale));
  ATTN_ASSIGN_OR_RETURN(c.dropout, ResolveDropout(o, c.dims, c.batches));
  return c;
}

template <typename Plan>
void CopyCommon(CommonPlan&& c, Plan* plan) {
  plan->dims = c.dims;
  plan->batches = std::move(c.batches);
  plan->mask = std::move(c.mask);
  plan->pse = std::move(c.pse);
  plan->dropout = std::move(c.dropout);
  plan->scale = c.scale;
}

absl::StatusOr<ForwardPlan> PlanForwardImpl(const ForwardArgs& args,
                                            const ThreadPolicy& threads,
                                            bool allow_bf16,
                                            InputDTypes accepted) {
  ForwardPlan plan;
  ATTN_ASSIGN_OR_RETURN(
      CommonPlan common,
      PlanCommon(args.query, args.key, args.value, args.options, accepted));
  CopyCommon(std::move(common), &plan);
  const AttentionDims& d = plan.dims;
  plan.flops = ForwardFlops(d, plan.batches);
  const DType out_dtype =
      IsFloatingCompute(d.dtype) ? d.dtype : DType::kFloat32;
  plan.outputs = {
      {"attention_out", out_dtype, QueryLikeShape(d, d.n1, d.dv)},
      {"softmax_max", DType::kFloat32, SoftmaxShape(d)},
      {"softmax_sum", DType::kFloat32, SoftmaxShape(d)},
  };
  const double bytes =
      TensorBytes({&args.query, &args.key, &args.value}, plan.outputs);
  plan.tiling =
      MakeTiling(d, threads.ThreadsFor(plan.flops, bytes), allow_bf16);
  // The kernel's own layout: K and V of one head, the query, score and
  // output tiles, the running max/sum and the tile's keep bytes, per thread.
  plan.workspace_bytes = FlashForwardWorkspaceBytes(d, plan.tiling);
  return plan;
}

// The softmax statistics' elements the backward reads: every row for the
// padded layouts, the tokens of batches with keys for TND ([T1, N1, 8]).
std::vector<ElementRange> StatisticRows(const AttentionDims& d,
                                        const std::vector<BatchSpan>& batches) {
  const int64_t per_token = d.n1 * kSoftmaxLanes;
  if (d.layout != Layout::kTND) {
    return {{0, d.b * d.s1 * per_token}};
  }
  std::vector<ElementRange> rows;
  for (const BatchSpan& s : batches) {
    if (s.s2 == 0 || s.s1 == 0) continue;
    rows.push_back({s.q_start * per_token, (s.q_start + s.s1) * per_token});
  }
  return rows;
}

absl::Status CheckResiduals(const BackwardArgs& args, const AttentionDims& d,
                            const std::vector<BatchSpan>& batches,
                            bool* has_residuals) {
  if (args.softmax_in.has_value()) {
    return InvalidField("softmax_in",
                        "is reserved and must not be set (leave the field "
                        "unset; the residuals are softmax_max, softmax_sum "
                        "and attention_in)");
  }
  const int residuals = args.softmax_max.has_value() +
                        args.softmax_sum.has_value() +
                        args.attention_in.has_value();
  if (residuals != 0 && residuals != 3) {
    return InvalidField(
        !args.softmax_max.has_value()   ? "softmax_max"
        : !args.softmax_sum.has_value() ? "softmax_sum"
                                        : "attention_in",
        "send softmax_max, softmax_sum and attention_in together, or none "
        "of them to have the server recompute them");
  }
  *has_residuals = residuals == 3;
  if (!*has_residuals) return absl::OkStatus();
  for (const auto& [t, name] : {std::pair{&*args.softmax_max, "softmax_max"},
                                std::pair{&*args.softmax_sum, "softmax_sum"}}) {
    ATTN_RETURN_IF_ERROR(
        CheckDType(*t, DType::kFloat32, name, "softmax statistics"));
    ATTN_RETURN_IF_ERROR(CheckShape(*t, SoftmaxShape(d), name));
    ATTN_RETURN_IF_ERROR(CheckByteSize(*t, name));
  }
  ATTN_RETURN_IF_ERROR(CheckSoftmaxStatistics(
      *args.softmax_max, *args.softmax_sum, StatisticRows(d, batches)));
  ATTN_RETURN_IF_ERROR(
      CheckDType(*args.attention_in, d.dtype, "attention_in", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckShape(
      *args.attention_in, QueryLikeShape(d, d.n1, d.dv), "attention_in"));
  return CheckRowTensorSize(*args.attention_in, "attention_in");
}

}  // namespace

absl::Status CheckScalarOptions(const AttentionOptions& o) {
  ATTN_RETURN_IF_ERROR(CheckScaleValue(o.scale_value));
  if (!(o.keep_prob > 0.0 && o.keep_prob <= 1.0)) {
    return InvalidField("keep_prob",
                        absl::StrCat("must be in (0, 1], got ", o.keep_prob));
  }
  if (static_cast<float>(o.keep_prob) < kMinKeepProb) {
    return InvalidField(
        "keep_prob",
        absl::StrCat("is used as float32 and must be >= ", kMinKeepProb,
                     " (the smallest normal float32, so that 1/keep_prob is "
                     "finite), got ",
                     o.keep_prob));
  }
  if (o.padding_mask.has_value()) {
    return InvalidField("padding_mask",
                        "is reserved and must not be set (leave the field "
                        "unset; masking is atten_mask's and sparse_mode's)");
  }
  if (o.pse_type < 0 || o.pse_type > 3) {
    return InvalidField("pse_type",
                        absl::StrCat("must be 0, 1, 2 or 3, got ", o.pse_type));
  }
  if (o.sparse_mode < 0 || o.sparse_mode > 8) {
    return InvalidField("sparse_mode",
                        absl::StrCat("must be in [0, 8], got ", o.sparse_mode));
  }
  // Reserved by the documents; torch_npu on CANN 7.0 defaulted to 1.
  if (o.inner_precise < 0 || o.inner_precise > 2) {
    return InvalidField("inner_precise", absl::StrCat("must be 0, 1 or 2, got ",
                                                      o.inner_precise));
  }
  for (const auto& [idx, name] : {std::pair{&o.q_start_idx, "q_start_idx"},
                                  std::pair{&o.kv_start_idx, "kv_start_idx"}}) {
    if (idx->size() > 1) {
      return InvalidField(
          name, absl::StrCat("takes at most one element, got ", idx->size()));
    }
    if (!idx->empty() &&
        (idx->front() < -kMaxStartIdx || idx->front() > kMaxStartIdx)) {
      return InvalidField(name,
                          absl::StrCat("must be in [-2147483647, 2147483647], "
                                       "got ",
                                       idx->front()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardPlan> PlanForward(const ForwardArgs& args,
                                        const ThreadPolicy& threads,
                                        bool allow_bf16) {
  return PlanForwardImpl(args, threads, allow_bf16, InputDTypes::kForward);
}

absl::StatusOr<ForwardPlan> PlanRecomputeForward(const ForwardArgs& args,
                                                 const ThreadPolicy& threads,
                                                 bool allow_bf16) {
  return PlanForwardImpl(args, threads, allow_bf16, InputDTypes::kGradient);
}

absl::StatusOr<BackwardPlan> PlanBackward(const BackwardArgs& args,
                                          const ThreadPolicy& threads,
                                          bool allow_bf16) {
  BackwardPlan plan;
  const AttentionOptions& o = args.options;
  ATTN_ASSIGN_OR_RETURN(
      CommonPlan common,
      PlanCommon(args.query, args.key, args.value, o, InputDTypes::kGradient));
  CopyCommon(std::move(common), &plan);
  const AttentionDims& d = plan.dims;
  ATTN_RETURN_IF_ERROR(CheckDType(args.dy, d.dtype, "dy", "same as query"));
  ATTN_RETURN_IF_ERROR(
      CheckShape(args.dy, QueryLikeShape(d, d.n1, d.dv), "dy"));
  ATTN_RETURN_IF_ERROR(CheckRowTensorSize(args.dy, "dy"));
  ATTN_RETURN_IF_ERROR(
      CheckResiduals(args, d, plan.batches, &plan.has_residuals));

  const double forward_flops = ForwardFlops(d, plan.batches);
  plan.flops = 2.5 * forward_flops;
  const DType grad_dtype =
      IsFloatingCompute(d.dtype) ? d.dtype : DType::kFloat32;
  plan.outputs = {
      {"dq", grad_dtype, QueryLikeShape(d, d.n1, d.d)},
      {"dk", grad_dtype, KeyLikeShape(d, d.n2, d.d)},
      {"dv", grad_dtype, KeyLikeShape(d, d.n2, d.dv)},
  };
  if (plan.pse.kind != PseSpec::Kind::kNone) {
    plan.outputs.push_back({"dpse", plan.pse.dtype, plan.pse.shape});
  }
  const double bytes = TensorBytes(
      {&args.query, &args.key, &args.value, &args.dy,
       args.attention_in.has_value() ? &*args.attention_in : nullptr},
      plan.outputs);
  plan.tiling = MakeTiling(
      d,
      threads.ThreadsFor(
          plan.has_residuals ? plan.flops : plan.flops + forward_flops, bytes),
      allow_bf16);
  // K, V, dK, dV of one head and the query-side and score tiles, per thread.
  plan.workspace_bytes = FlashBackwardWorkspaceBytes(d, plan.tiling);
  if (!plan.has_residuals) {
    const ForwardArgs forward{args.query, args.key, args.value, o};
    ATTN_ASSIGN_OR_RETURN(
        plan.recompute,
        PlanRecomputeForward(forward, plan.tiling.threads, allow_bf16));
  }
  return plan;
}

}  // namespace attnserve::core
