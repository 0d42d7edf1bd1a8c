// Layout, dtype and shape resolution of query/key/value, and the per-batch
// rows (TND's cumulative sequence lengths).
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "plan/checks.h"
#include "plan/layout.h"
#include "plan/resolve.h"

namespace attnserve::core {
namespace {

// Where B, S and the hidden/head dims sit in a q/k/v shape.
struct AxisIndex {
  int b, s, n, d;  // b = -1 for TND; n = -1 and d = hidden for BSH / SBH.
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

bool IsFloat8(DType t) {
  return t == DType::kFloat8E4M3FN || t == DType::kFloat8E5M2;
}

absl::Status CheckRank(const TensorView& t, Layout layout,
                       const std::string& field) {
  const int want = (layout == Layout::kBNSD || layout == Layout::kBSND) ? 4 : 3;
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
          DimField(field, ax.d),
          absl::StrCat(
              "hidden size ", hidden,
              " must be a multiple of the key/value heads N2=", known_heads));
    }
    *heads = known_heads;
    *dim = hidden / known_heads;
    return absl::OkStatus();
  }
  if (hidden % known_dim != 0) {
    return InvalidField(DimField(field, ax.d),
                        absl::StrCat("hidden size ", hidden,
                                     " must be a multiple of the head dim D=",
                                     known_dim, " (query hidden / head_num)"));
  }
  *heads = hidden / known_dim;
  *dim = known_dim;
  return absl::OkStatus();
}

absl::Status CheckInputDType(const TensorView& q, InputDTypes accepted) {
  if (IsFloatingCompute(q.dtype)) return absl::OkStatus();
  if (IsFloat8(q.dtype)) {
    if (accepted == InputDTypes::kGradient) return absl::OkStatus();
    return InvalidField(
        "query.dtype",
        absl::StrCat("FlashAttentionScore takes FLOAT32, FLOAT16 or BFLOAT16 "
                     "(FLOAT8 inputs are accepted by the grad only), got ",
                     DTypeName(q.dtype)));
  }
  return InvalidField(
      "query.dtype",
      absl::StrCat(accepted == InputDTypes::kGradient
                       ? "must be FLOAT32, FLOAT16, BFLOAT16, FLOAT8_E4M3FN or "
                         "FLOAT8_E5M2, got "
                       : "must be FLOAT32, FLOAT16 or BFLOAT16, got ",
                   DTypeName(q.dtype)));
}

// Cumulative end offsets: non-decreasing, non-negative, last == tokens.
absl::Status CheckCumulative(const std::vector<int64_t>& cu, int64_t tokens,
                             const std::string& field,
                             const std::string& tensor) {
  int64_t prev = 0;
  for (size_t i = 0; i < cu.size(); ++i) {
    if (cu[i] < prev) {
      return InvalidField(
          absl::StrCat(field, "[", i, "]"),
          absl::StrCat("cumulative lengths must be non-decreasing and >= 0 "
                       "(entry ",
                       i, " = ", cu[i], " < ", prev, ")"));
    }
    prev = cu[i];
  }
  if (prev != tokens) {
    return InvalidField(absl::StrCat(field, "[", cu.size() - 1, "]"),
                        absl::StrCat("the last cumulative length must equal ",
                                     tensor, "'s T=", tokens, ", got ", prev));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DimField(const std::string& field, int axis) {
  return absl::StrCat(field, ".shape[", axis, "]");
}

absl::StatusOr<AttentionDims> ResolveDims(const TensorView& q,
                                          const TensorView& k,
                                          const TensorView& v,
                                          const AttentionOptions& o,
                                          InputDTypes accepted) {
  AttentionDims dims;
  ATTN_ASSIGN_OR_RETURN(dims.layout, ParseLayout(o.input_layout));
  const bool tnd = dims.layout == Layout::kTND;
  dims.dtype = q.dtype;
  ATTN_RETURN_IF_ERROR(CheckInputDType(q, accepted));
  ATTN_RETURN_IF_ERROR(CheckDType(k, q.dtype, "key", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckDType(v, q.dtype, "value", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckRank(q, dims.layout, "query"));
  ATTN_RETURN_IF_ERROR(CheckRank(k, dims.layout, "key"));
  ATTN_RETURN_IF_ERROR(CheckRank(v, dims.layout, "value"));
  ATTN_RETURN_IF_ERROR(CheckRowTensorSize(q, "query"));
  ATTN_RETURN_IF_ERROR(CheckRowTensorSize(k, "key"));
  ATTN_RETURN_IF_ERROR(CheckRowTensorSize(v, "value"));

  ATTN_RETURN_IF_ERROR(
      CheckRange(o.head_num, 1, kMaxHeads, "head_num", "head_num (N1)"));
  const AxisIndex ax = AxesOf(dims.layout);
  const int64_t max_d = tnd ? kMaxTndHeadDim : kMaxHeadDim;
  dims.n1 = o.head_num;
  if (tnd) {
    dims.t1 = q.dim(ax.s);
    ATTN_RETURN_IF_ERROR(CheckRange(dims.t1, 1, kMaxTokens,
                                    DimField("query", ax.s), "tokens T1"));
  } else {
    dims.b = q.dim(ax.b);
    dims.s1 = q.dim(ax.s);
    ATTN_RETURN_IF_ERROR(
        CheckRange(dims.b, 1, kMaxBatch, DimField("query", ax.b), "batch B"));
    ATTN_RETURN_IF_ERROR(CheckRange(dims.s1, 1, kMaxSeq,
                                    DimField("query", ax.s), "sequence Sq"));
  }
  if (ax.n >= 0) {
    if (q.dim(ax.n) != o.head_num) {
      return InvalidField(
          "head_num",
          absl::StrCat("must equal the query's N (", DimField("query", ax.n),
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
      CheckRange(dims.d, 1, max_d, DimField("query", ax.d), "head dim D"));

  int64_t kd = 0;
  ATTN_RETURN_IF_ERROR(SplitHeads(k, ax, 0, dims.d, "key", &dims.n2, &kd));
  if (!tnd && k.dim(ax.b) != dims.b) {
    return InvalidField(DimField("key", ax.b),
                        absl::StrCat("batch must equal the query's B=", dims.b,
                                     ", got ", k.dim(ax.b)));
  }
  if (kd != dims.d) {
    return InvalidField(DimField("key", ax.d),
                        absl::StrCat("head dim must equal the query's D=",
                                     dims.d, ", got ", kd));
  }
  if (tnd) {
    dims.t2 = k.dim(ax.s);
    ATTN_RETURN_IF_ERROR(
        CheckRange(dims.t2, 1, kMaxTokens, DimField("key", ax.s), "tokens T2"));
  } else {
    dims.s2 = k.dim(ax.s);
    ATTN_RETURN_IF_ERROR(
        CheckRange(dims.s2, 1, kMaxSeq, DimField("key", ax.s), "sequence Skv"));
  }
  const std::string key_heads_field =
      ax.n >= 0 ? DimField("key", ax.n) : DimField("key", ax.d);
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
  if (!tnd && v.dim(ax.b) != dims.b) {
    return InvalidField(DimField("value", ax.b),
                        absl::StrCat("batch must equal the query's B=", dims.b,
                                     ", got ", v.dim(ax.b)));
  }
  if (v.dim(ax.s) != k.dim(ax.s)) {
    return InvalidField(
        DimField("value", ax.s),
        absl::StrCat("sequence must equal the key's ",
                     tnd ? "T2=" : "Skv=", k.dim(ax.s), ", got ", v.dim(ax.s)));
  }
  if (vn != dims.n2) {
    return InvalidField(
        DimField("value", ax.n < 0 ? ax.d : ax.n),
        absl::StrCat("heads must equal the key's N2=", dims.n2, ", got ", vn));
  }
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.dv, 1, max_d, DimField("value", ax.d), "head dim Dv"));
  if (tnd && dims.dv > dims.d) {
    return InvalidField(
        DimField("value", ax.d),
        absl::StrCat("TND needs qD == kD >= vD: value head dim ", dims.dv,
                     " exceeds D=", dims.d));
  }
  return dims;
}

absl::StatusOr<std::vector<BatchSpan>> ResolveBatches(const AttentionOptions& o,
                                                      AttentionDims* dims) {
  std::vector<BatchSpan> batches;
  if (dims->layout != Layout::kTND) {
    if (!o.actual_seq_qlen.empty() || !o.actual_seq_kvlen.empty()) {
      return InvalidField(
          o.actual_seq_qlen.empty() ? "actual_seq_kvlen" : "actual_seq_qlen",
          "is only used with input_layout TND");
    }
    batches.assign(static_cast<size_t>(dims->b),
                   BatchSpan{0, dims->s1, 0, dims->s2});
    return batches;
  }
  const bool prefix = o.sparse_mode == 5 || o.sparse_mode == 6;
  const int64_t max_b = prefix ? kMaxTndBatchWithPrefix : kMaxTndBatch;
  for (const auto& [cu, name] :
       {std::pair{&o.actual_seq_qlen, "actual_seq_qlen"},
        std::pair{&o.actual_seq_kvlen, "actual_seq_kvlen"}}) {
    if (cu->empty()) {
      return InvalidField(name,
                          "is required with input_layout TND (cumulative end "
                          "offsets of each batch, length B)");
    }
    if (static_cast<int64_t>(cu->size()) > max_b) {
      return InvalidField(name, absl::StrCat("length B must be in [1, ", max_b,
                                             "]", prefix ? " with prefix" : "",
                                             ", got ", cu->size()));
    }
  }
  if (o.actual_seq_qlen.size() != o.actual_seq_kvlen.size()) {
    return InvalidField(
        "actual_seq_kvlen",
        absl::StrCat("must have the same length B as actual_seq_qlen (",
                     o.actual_seq_qlen.size(), "), got ",
                     o.actual_seq_kvlen.size()));
  }
  ATTN_RETURN_IF_ERROR(
      CheckCumulative(o.actual_seq_qlen, dims->t1, "actual_seq_qlen", "query"));
  ATTN_RETURN_IF_ERROR(
      CheckCumulative(o.actual_seq_kvlen, dims->t2, "actual_seq_kvlen", "key"));
  dims->b = static_cast<int64_t>(o.actual_seq_qlen.size());
  dims->s1 = 0;
  dims->s2 = 0;
  int64_t q0 = 0, kv0 = 0;
  for (size_t b = 0; b < o.actual_seq_qlen.size(); ++b) {
    BatchSpan span{q0, o.actual_seq_qlen[b] - q0, kv0,
                   o.actual_seq_kvlen[b] - kv0};
    dims->s1 = std::max(dims->s1, span.s1);
    dims->s2 = std::max(dims->s2, span.s2);
    q0 = o.actual_seq_qlen[b];
    kv0 = o.actual_seq_kvlen[b];
    batches.push_back(span);
  }
  return batches;
}

std::vector<int64_t> QueryLikeShape(const AttentionDims& d, int64_t heads,
                                    int64_t dim) {
  if (d.layout == Layout::kTND) return {d.t1, heads, dim};
  return ShapeFor(d.layout, d.b, d.s1, heads, dim);
}

std::vector<int64_t> KeyLikeShape(const AttentionDims& d, int64_t heads,
                                  int64_t dim) {
  if (d.layout == Layout::kTND) return {d.t2, heads, dim};
  return ShapeFor(d.layout, d.b, d.s2, heads, dim);
}

std::vector<int64_t> SoftmaxShape(const AttentionDims& d) {
  if (d.layout == Layout::kTND) return {d.t1, d.n1, kSoftmaxLanes};
  return {d.b, d.n1, d.s1, kSoftmaxLanes};
}

}  // namespace attnserve::core
