// PlanForward / PlanBackward: every constraint of the FlashAttentionScore
// family that the current kernels support, checked in one place.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/status_macros.h"
#include "plan/checks.h"
#include "plan/layout.h"

namespace attnserve::core {
namespace {

// Documented ranges (SEMANTICS.md §8).
constexpr int64_t kMaxBatch = 2 * 1024 * 1024;
constexpr int64_t kMaxHeads = 256;
constexpr int64_t kMaxSeq = 1024 * 1024;
constexpr int64_t kMaxHeadDim = 512;
constexpr int64_t kSoftmaxLanes = 8;

// Tile sizes: a 64 x 128 score tile (32 KiB) and its Q/K/V slices stay in L2.
constexpr int64_t kTileQ = 64;
constexpr int64_t kTileKv = 128;

// Where B, S and the hidden/head dims sit in a q/k/v shape.
struct AxisIndex {
  int b, s, n, d;  // n = -1 and d = hidden axis for BSH / SBH.
};

AxisIndex AxesOf(Layout layout) {
  switch (layout) {
    case Layout::kBSH:
      return {0, 1, -1, 2};
    case Layout::kSBH:
      return {1, 0, -1, 2};
    case Layout::kBSND:
      return {0, 1, 2, 3};
    case Layout::kBNSD:
      return {0, 2, 1, 3};
    case Layout::kTND:
      return {-1, 0, 1, 2};
  }
  return {};
}

std::string Dim(const std::string& field, int axis) {
  return absl::StrCat(field, ".shape[", axis, "]");
}

absl::Status CheckRank(const TensorView& t, Layout layout,
                       const std::string& field) {
  const int want = (layout == Layout::kBSH || layout == Layout::kSBH) ? 3 : 4;
  if (t.rank() != want) {
    return InvalidField(
        field + ".shape",
        absl::StrCat("must have rank ", want, " for layout ",
                     LayoutName(layout), ", got ", ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

// Heads and head dim of key or value, given the query's D for BSH / SBH.
absl::Status SplitHeads(const TensorView& t, const AxisIndex& ax,
                        int64_t known_heads, int64_t known_dim,
                        const std::string& field, int64_t* heads,
                        int64_t* dim) {
  if (ax.n >= 0) {
    *heads = t.dim(ax.n);
    *dim = t.dim(ax.d);
    return absl::OkStatus();
  }
  const int64_t hidden = t.dim(ax.d);
  if (known_heads > 0) {  // value: heads known from key, dim follows.
    if (hidden % known_heads != 0) {
      return InvalidField(
          Dim(field, ax.d),
          absl::StrCat(
              "hidden size ", hidden,
              " must be a multiple of the key/value heads N2=", known_heads));
    }
    *heads = known_heads;
    *dim = hidden / known_heads;
    return absl::OkStatus();
  }
  if (hidden % known_dim != 0) {
    return InvalidField(Dim(field, ax.d),
                        absl::StrCat("hidden size ", hidden,
                                     " must be a multiple of the head dim D=",
                                     known_dim, " (query hidden / head_num)"));
  }
  *heads = hidden / known_dim;
  *dim = known_dim;
  return absl::OkStatus();
}

absl::StatusOr<AttentionDims> ResolveDims(const TensorView& q,
                                          const TensorView& k,
                                          const TensorView& v,
                                          const AttentionOptions& o,
                                          bool allow_fp8) {
  AttentionDims dims;
  ATTN_ASSIGN_OR_RETURN(dims.layout, ParseLayout(o.input_layout));
  if (dims.layout == Layout::kTND) {
    return UnimplementedField(
        "input_layout",
        "TND (varlen) is not implemented yet; use a padded "
        "layout (BSH, SBH, BSND, BNSD)");
  }
  dims.dtype = q.dtype;
  if (!IsFloatingCompute(q.dtype)) {
    const bool fp8 =
        q.dtype == DType::kFloat8E4M3FN || q.dtype == DType::kFloat8E5M2;
    if (fp8 && allow_fp8) {
      return UnimplementedField("query.dtype",
                                "FLOAT8 inputs are not implemented yet");
    }
    return InvalidField("query.dtype",
                        absl::StrCat("must be FLOAT32, FLOAT16 or BFLOAT16, "
                                     "got ",
                                     DTypeName(q.dtype)));
  }
  ATTN_RETURN_IF_ERROR(CheckDType(k, q.dtype, "key", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckDType(v, q.dtype, "value", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckRank(q, dims.layout, "query"));
  ATTN_RETURN_IF_ERROR(CheckRank(k, dims.layout, "key"));
  ATTN_RETURN_IF_ERROR(CheckRank(v, dims.layout, "value"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(q, "query"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(k, "key"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(v, "value"));

  ATTN_RETURN_IF_ERROR(
      CheckRange(o.head_num, 1, kMaxHeads, "head_num", "head_num (N1)"));
  const AxisIndex ax = AxesOf(dims.layout);
  dims.n1 = o.head_num;
  dims.b = q.dim(ax.b);
  dims.s1 = q.dim(ax.s);
  if (ax.n >= 0) {
    if (q.dim(ax.n) != o.head_num) {
      return InvalidField(
          "head_num",
          absl::StrCat("must equal the query's N (", Dim("query", ax.n),
                       ")=", q.dim(ax.n), ", got ", o.head_num));
    }
    dims.d = q.dim(ax.d);
  } else {
    const int64_t hidden = q.dim(ax.d);
    if (hidden % o.head_num != 0) {
      return InvalidField("head_num",
                          absl::StrCat("must divide the query hidden size H=",
                                       hidden, ", got ", o.head_num));
    }
    dims.d = hidden / o.head_num;
  }
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.b, 1, kMaxBatch, Dim("query", ax.b), "batch B"));
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.s1, 1, kMaxSeq, Dim("query", ax.s), "sequence Sq"));
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.d, 1, kMaxHeadDim, Dim("query", ax.d), "head dim D"));

  int64_t kd = 0;
  ATTN_RETURN_IF_ERROR(SplitHeads(k, ax, 0, dims.d, "key", &dims.n2, &kd));
  if (k.dim(ax.b) != dims.b) {
    return InvalidField(Dim("key", ax.b),
                        absl::StrCat("batch must equal the query's B=", dims.b,
                                     ", got ", k.dim(ax.b)));
  }
  if (kd != dims.d) {
    return InvalidField(Dim("key", ax.d),
                        absl::StrCat("head dim must equal the query's D=",
                                     dims.d, ", got ", kd));
  }
  dims.s2 = k.dim(ax.s);
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.s2, 1, kMaxSeq, Dim("key", ax.s), "sequence Skv"));
  const std::string key_heads_field =
      ax.n >= 0 ? Dim("key", ax.n) : Dim("key", ax.d);
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.n2, 1, kMaxHeads, key_heads_field, "key heads N2"));
  if (dims.n1 % dims.n2 != 0) {
    return InvalidField(
        key_heads_field,
        absl::StrCat("key heads N2=", dims.n2,
                     " must divide query heads N1=", dims.n1, " (GQA/MQA)"));
  }
  dims.g = dims.n1 / dims.n2;

  int64_t vn = 0;
  if (ax.n >= 0) {
    vn = v.dim(ax.n);
    dims.dv = v.dim(ax.d);
  } else {
    ATTN_RETURN_IF_ERROR(SplitHeads(v, ax, dims.n2, 0, "value", &vn, &dims.dv));
  }
  if (v.dim(ax.b) != dims.b) {
    return InvalidField(Dim("value", ax.b),
                        absl::StrCat("batch must equal the query's B=", dims.b,
                                     ", got ", v.dim(ax.b)));
  }
  if (v.dim(ax.s) != dims.s2) {
    return InvalidField(Dim("value", ax.s),
                        absl::StrCat("sequence must equal the key's Skv=",
                                     dims.s2, ", got ", v.dim(ax.s)));
  }
  if (vn != dims.n2) {
    return InvalidField(
        Dim("value", ax.n),
        absl::StrCat("heads must equal the key's N2=", dims.n2, ", got ", vn));
  }
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.dv, 1, kMaxHeadDim, Dim("value", ax.d), "head dim Dv"));
  return dims;
}

// The band of sparse_mode 0 must keep at least one cell of the matrix.
absl::Status CheckBand(const AttentionOptions& o, const AttentionDims& dims) {
  if (o.next_tokens < 0 && o.pre_tokens < -o.next_tokens) {
    return InvalidField(
        "pre_tokens",
        absl::StrCat("with next_tokens=", o.next_tokens,
                     " < 0, pre_tokens must be >= ", -o.next_tokens,
                     " (empty band), got ", o.pre_tokens));
  }
  if (o.pre_tokens < 0 && o.next_tokens < -o.pre_tokens) {
    return InvalidField(
        "next_tokens",
        absl::StrCat("with pre_tokens=", o.pre_tokens,
                     " < 0, next_tokens must be >= ", -o.pre_tokens,
                     " (empty band), got ", o.next_tokens));
  }
  if (o.next_tokens < -(dims.s1 - 1)) {
    return InvalidField(
        "next_tokens",
        absl::StrCat("must be >= -(Sq-1)=", -(dims.s1 - 1),
                     " or the band is empty, got ", o.next_tokens));
  }
  if (o.pre_tokens < -(dims.s2 - 1)) {
    return InvalidField(
        "pre_tokens",
        absl::StrCat("must be >= -(Skv-1)=", -(dims.s2 - 1),
                     " or the band is empty, got ", o.pre_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<MaskSpec> ResolveMask(const AttentionOptions& o,
                                     const AttentionDims& dims) {
  MaskSpec mask;
  mask.pre_tokens = o.pre_tokens;
  mask.next_tokens = o.next_tokens;
  ATTN_RETURN_IF_ERROR(CheckBand(o, dims));
  if (!o.atten_mask.has_value()) return mask;
  const TensorView& m = *o.atten_mask;
  if (m.dtype != DType::kBool && m.dtype != DType::kUInt8) {
    return InvalidField("atten_mask.dtype",
                        absl::StrCat("must be BOOL or UINT8 (1 = masked), got ",
                                     DTypeName(m.dtype)));
  }
  ATTN_RETURN_IF_ERROR(CheckByteSize(m, "atten_mask"));
  const int64_t b = dims.b, n = dims.n1, sq = dims.s1, skv = dims.s2;
  const std::string allowed = absl::StrCat(
      "must be [B,N1,Sq,Skv], [B,1,Sq,Skv], [1,1,Sq,Skv] or [Sq,Skv] = ",
      ShapeString({b, n, sq, skv}), ", ", ShapeString({b, 1, sq, skv}), ", ",
      ShapeString({1, 1, sq, skv}), " or ", ShapeString({sq, skv}), ", got ",
      ShapeString(m.shape));
  mask.has_tensor = true;
  mask.stride_j = 1;
  mask.stride_i = skv;
  if (m.shape == std::vector<int64_t>{sq, skv}) return mask;
  if (m.rank() != 4 || m.dim(2) != sq || m.dim(3) != skv ||
      !((m.dim(0) == b && m.dim(1) == n) || (m.dim(0) == b && m.dim(1) == 1) ||
        (m.dim(0) == 1 && m.dim(1) == 1))) {
    return InvalidField("atten_mask.shape", allowed);
  }
  mask.stride_n = m.dim(1) == 1 ? 0 : sq * skv;
  mask.stride_b = m.dim(0) == 1 ? 0 : m.dim(1) * sq * skv;
  return mask;
}

absl::Status CheckOptions(const AttentionOptions& o,
                          const AttentionDims& dims) {
  if (!std::isfinite(o.scale_value)) {
    return InvalidField("scale_value", "must be a finite number");
  }
  if (!(o.keep_prob > 0.0 && o.keep_prob <= 1.0)) {
    return InvalidField("keep_prob",
                        absl::StrCat("must be in (0, 1], got ", o.keep_prob));
  }
  if (o.pse_type < 0 || o.pse_type > 3) {
    return InvalidField("pse_type",
                        absl::StrCat("must be 0, 1, 2 or 3, got ", o.pse_type));
  }
  if (o.sparse_mode < 0 || o.sparse_mode > 8) {
    return InvalidField("sparse_mode",
                        absl::StrCat("must be in [0, 8], got ", o.sparse_mode));
  }
  if (o.inner_precise != 0 && o.inner_precise != 2) {
    return InvalidField("inner_precise",
                        absl::StrCat("must be 0 or 2, got ", o.inner_precise));
  }
  if (o.pse_type != 1 && !o.pse.has_value()) {
    return InvalidField(
        "pse", absl::StrCat("pse_type=", o.pse_type, " requires a pse tensor"));
  }
  if (!o.actual_seq_qlen.empty() || !o.actual_seq_kvlen.empty()) {
    return InvalidField(
        o.actual_seq_qlen.empty() ? "actual_seq_kvlen" : "actual_seq_qlen",
        "is only used with input_layout TND");
  }
  if (!o.prefix.empty() && o.sparse_mode != 5 && o.sparse_mode != 6) {
    return InvalidField("prefix", absl::StrCat("is only used with sparse_mode "
                                               "5 or 6, got sparse_mode ",
                                               o.sparse_mode));
  }
  // Options the kernels do not implement yet are refused by name.
  if (o.sparse_mode != 0) {
    return UnimplementedField("sparse_mode",
                              absl::StrCat("sparse_mode ", o.sparse_mode,
                                           " is not implemented yet (only 0)"));
  }
  if (o.pse.has_value()) {
    return UnimplementedField("pse", "pse is not implemented yet");
  }
  if (o.drop_mask.has_value()) {
    return UnimplementedField("drop_mask", "dropout is not implemented yet");
  }
  if (o.keep_prob < 1.0) {
    return UnimplementedField("keep_prob",
                              "dropout (keep_prob < 1) is not implemented yet");
  }
  (void)dims;
  return absl::OkStatus();
}

double ForwardFlops(const AttentionDims& d) {
  return 2.0 * static_cast<double>(d.b * d.n1) * static_cast<double>(d.s1) *
         static_cast<double>(d.s2) * static_cast<double>(d.d + d.dv);
}

Tiling MakeTiling(int threads) {
  return Tiling{kTileQ, kTileKv, threads < 1 ? 1 : threads};
}

uint64_t FloatBytes(int64_t floats) {
  // Whole cache lines, plus one line of slack for each aligned region.
  const int64_t lines = (floats + 15) / 16 + 16;
  return static_cast<uint64_t>(lines) * 64;
}

std::vector<int64_t> SoftmaxShape(const AttentionDims& d) {
  return {d.b, d.n1, d.s1, kSoftmaxLanes};
}

}  // namespace

absl::StatusOr<ForwardPlan> PlanForward(const ForwardArgs& args, int threads) {
  ForwardPlan plan;
  const AttentionOptions& o = args.options;
  ATTN_ASSIGN_OR_RETURN(
      plan.dims, ResolveDims(args.query, args.key, args.value, o, false));
  ATTN_RETURN_IF_ERROR(CheckOptions(o, plan.dims));
  ATTN_ASSIGN_OR_RETURN(plan.mask, ResolveMask(o, plan.dims));
  const AttentionDims& d = plan.dims;
  plan.scale = static_cast<float>(o.scale_value);
  plan.tiling = MakeTiling(threads);
  const int64_t tq = plan.tiling.tile_q, tk = plan.tiling.tile_kv;
  const int64_t per_thread =
      d.s2 * (d.d + d.dv) + tq * d.d + tq * tk + tq * d.dv + 4 * tq;
  plan.workspace_bytes = FloatBytes(per_thread) * plan.tiling.threads;
  plan.flops = ForwardFlops(d);
  plan.outputs = {
      {"attention_out", d.dtype, ShapeFor(d.layout, d.b, d.s1, d.n1, d.dv)},
      {"softmax_max", DType::kFloat32, SoftmaxShape(d)},
      {"softmax_sum", DType::kFloat32, SoftmaxShape(d)},
  };
  return plan;
}

absl::StatusOr<BackwardPlan> PlanBackward(const BackwardArgs& args,
                                          int threads) {
  BackwardPlan plan;
  const AttentionOptions& o = args.options;
  ATTN_ASSIGN_OR_RETURN(plan.dims,
                        ResolveDims(args.query, args.key, args.value, o, true));
  const AttentionDims& d = plan.dims;
  const std::vector<int64_t> dy_shape =
      ShapeFor(d.layout, d.b, d.s1, d.n1, d.dv);
  ATTN_RETURN_IF_ERROR(CheckDType(args.dy, d.dtype, "dy", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckShape(args.dy, dy_shape, "dy"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(args.dy, "dy"));
  ATTN_RETURN_IF_ERROR(CheckOptions(o, d));
  ATTN_ASSIGN_OR_RETURN(plan.mask, ResolveMask(o, d));

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
  plan.has_residuals = residuals == 3;
  if (plan.has_residuals) {
    for (const auto& [t, name] :
         {std::pair{&*args.softmax_max, "softmax_max"},
          std::pair{&*args.softmax_sum, "softmax_sum"}}) {
      ATTN_RETURN_IF_ERROR(
          CheckDType(*t, DType::kFloat32, name, "softmax statistics"));
      ATTN_RETURN_IF_ERROR(CheckShape(*t, SoftmaxShape(d), name));
      ATTN_RETURN_IF_ERROR(CheckByteSize(*t, name));
    }
    ATTN_RETURN_IF_ERROR(CheckDType(*args.attention_in, d.dtype, "attention_in",
                                    "same as query"));
    ATTN_RETURN_IF_ERROR(
        CheckShape(*args.attention_in, dy_shape, "attention_in"));
    ATTN_RETURN_IF_ERROR(CheckByteSize(*args.attention_in, "attention_in"));
  }
  plan.scale = static_cast<float>(o.scale_value);
  plan.tiling = MakeTiling(threads);
  const int64_t tq = plan.tiling.tile_q, tk = plan.tiling.tile_kv;
  const int64_t per_thread =
      2 * d.s2 * (d.d + d.dv) + 2 * tq * (d.d + d.dv) + 2 * tq * tk + 4 * tq;
  plan.workspace_bytes = FloatBytes(per_thread) * plan.tiling.threads;
  plan.flops = 2.5 * ForwardFlops(d);
  plan.outputs = {
      {"dq", d.dtype, ShapeFor(d.layout, d.b, d.s1, d.n1, d.d)},
      {"dk", d.dtype, ShapeFor(d.layout, d.b, d.s2, d.n2, d.d)},
      {"dv", d.dtype, ShapeFor(d.layout, d.b, d.s2, d.n2, d.dv)},
  };
  return plan;
}

}  // namespace attnserve::core
