// PlanNsaForward / PlanNsaBackward: every constraint of the NSA selected
// attention documents (and docs/semantics.md, "NSA selected attention"),
// checked in one place.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/client_text.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/status_macros.h"
#include "kernels/nsa_attention.h"
#include "plan/checks.h"

namespace attnserve::core {
namespace {

// Documented ranges (NsaSelectedAttention(Grad) constraint sections).
constexpr int64_t kMaxTokens = 2 * 1024 * 1024;     // T1, T2.
constexpr int64_t kMaxBatchForward = 1024;          // Forward document.
constexpr int64_t kMaxBatchGrad = 2 * 1024 * 1024;  // Grad document.
constexpr int64_t kMaxSeqPerBatch = 128 * 1024;     // S of each batch.
constexpr int64_t kMaxHeads = 128;                  // N1, N2.
constexpr int64_t kMaxGroup = 32;                   // G = N1 / N2.
constexpr int64_t kMaxBlockSize = 128;              // selected_block_size.
constexpr int64_t kBlockSizeMultiple = 16;          // ... a multiple of 16.
constexpr int64_t kMaxBlockCount = 32;              // selected_block_count.
constexpr int64_t kSoftmaxLanes = 8;
// The standard compressed causal mask of sparse_mode 2.
constexpr int64_t kCausalMaskSide = 2048;

// Query tokens per tile: the products with a key block take every token of
// the tile that selects it, so a tile of T tokens gives them up to T x G
// rows, and each block is packed for the GEMM once per tile. 32 tokens, or
// fewer to keep T x G <= 512 (the tile's scores, T x G x K x bs floats, stay
// within 8 MiB). Measured at G = 16, bs = 64, K = 16 with random blocks:
// 32-token tiles run about 10 % faster than 16, 64 no faster.
constexpr int64_t kMaxTileTokens = 32;
constexpr int64_t kMaxTileRows = 512;
// Backward: aim for about this many (chunk, kv head) work items, with
// chunks of at least kMinChunkTokens tokens (a full tile), while the
// chunks' fp32 dK/dV partial sums fit in kPartialBudgetBytes (or one chunk
// per batch).
constexpr int64_t kTargetChunkItems = 32;
constexpr int64_t kMinChunkTokens = 32;
constexpr uint64_t kPartialBudgetBytes = uint64_t{128} << 20;

bool IsHeadDim(int64_t d) { return d == 128 || d == 192; }

// Shapes, dtypes, heads and head dims of query/key/value.
absl::StatusOr<NsaDims> ResolveTensors(const TensorView& q, const TensorView& k,
                                       const TensorView& v,
                                       const NsaOptions& o) {
  NsaDims dims;
  if (o.input_layout.empty()) {
    return InvalidField("input_layout", "is required: NSA supports TND only");
  }
  if (o.input_layout != "TND") {
    return InvalidField("input_layout",
                        absl::StrCat("must be TND for NSA selected attention, "
                                     "got \"",
                                     ClientText(o.input_layout), "\""));
  }
  if (!IsFloatingCompute(q.dtype)) {
    return InvalidField("query.dtype",
                        absl::StrCat("must be BFLOAT16, FLOAT16 or FLOAT32, "
                                     "got ",
                                     DTypeName(q.dtype)));
  }
  dims.dtype = q.dtype;
  ATTN_RETURN_IF_ERROR(CheckDType(k, q.dtype, "key", "same as query"));
  ATTN_RETURN_IF_ERROR(CheckDType(v, q.dtype, "value", "same as query"));
  for (const auto& [t, name] :
       {std::pair{&q, "query"}, std::pair{&k, "key"}, std::pair{&v, "value"}}) {
    if (t->rank() != 3) {
      return InvalidField(
          absl::StrCat(name, ".shape"),
          absl::StrCat("must have rank 3 [T, N, D] for layout TND, got ",
                       ShapeString(t->shape)));
    }
    ATTN_RETURN_IF_ERROR(CheckByteSize(*t, name));
  }
  dims.t1 = q.dim(0);
  dims.n1 = q.dim(1);
  dims.d = q.dim(2);
  dims.t2 = k.dim(0);
  dims.n2 = k.dim(1);
  dims.dv = v.dim(2);
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.t1, 1, kMaxTokens, "query.shape[0]", "T1"));
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.t2, 1, kMaxTokens, "key.shape[0]", "T2"));
  ATTN_RETURN_IF_ERROR(
      CheckRange(o.head_num, 1, kMaxHeads, "head_num", "head_num (N1)"));
  if (dims.n1 != o.head_num) {
    return InvalidField("head_num",
                        absl::StrCat("must equal the query's N "
                                     "(query.shape[1])=",
                                     dims.n1, ", got ", o.head_num));
  }
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims.n2, 1, kMaxHeads, "key.shape[1]", "key heads N2"));
  if (dims.n1 % dims.n2 != 0) {
    return InvalidField(
        "key.shape[1]",
        absl::StrCat("key heads N2=", dims.n2,
                     " must divide query heads N1=", dims.n1, " (GQA)"));
  }
  dims.g = dims.n1 / dims.n2;
  if (dims.g > kMaxGroup) {
    return InvalidField(
        "key.shape[1]",
        absl::StrCat("group size G = N1/N2 = ", dims.n1, "/", dims.n2, " = ",
                     dims.g, " must be at most ", kMaxGroup));
  }
  if (!IsHeadDim(dims.d)) {
    return InvalidField(
        "query.shape[2]",
        absl::StrCat("head dim D must be 128 or 192, got ", dims.d));
  }
  if (k.dim(2) != dims.d) {
    return InvalidField("key.shape[2]",
                        absl::StrCat("head dim must equal the query's D=",
                                     dims.d, ", got ", k.dim(2)));
  }
  if (v.dim(0) != dims.t2) {
    return InvalidField(
        "value.shape[0]",
        absl::StrCat("must equal the key's T2=", dims.t2, ", got ", v.dim(0)));
  }
  if (v.dim(1) != dims.n2) {
    return InvalidField("value.shape[1]",
                        absl::StrCat("heads must equal the key's N2=", dims.n2,
                                     ", got ", v.dim(1)));
  }
  if (!IsHeadDim(dims.dv)) {
    return InvalidField(
        "value.shape[2]",
        absl::StrCat("head dim Dv must be 128 or 192, got ", dims.dv));
  }
  return dims;
}

absl::Status CheckScalars(const NsaOptions& o, NsaDims* dims) {
  ATTN_RETURN_IF_ERROR(CheckScaleValue(o.scale_value));
  if (o.sparse_mode != 0 && o.sparse_mode != 2) {
    return InvalidField(
        "sparse_mode",
        absl::StrCat("must be 0 or 2 for NSA selected attention, got ",
                     o.sparse_mode));
  }
  dims->causal = o.sparse_mode == 2;
  const int64_t bs = o.selected_block_size;
  if (bs < 1 || bs > kMaxBlockSize || bs % kBlockSizeMultiple != 0) {
    return InvalidField(
        "selected_block_size",
        absl::StrCat("must be a multiple of ", kBlockSizeMultiple, " in [",
                     kBlockSizeMultiple, ", ", kMaxBlockSize, "], got ", bs));
  }
  ATTN_RETURN_IF_ERROR(CheckRange(o.selected_block_count, 1, kMaxBlockCount,
                                  "selected_block_count",
                                  "selected_block_count"));
  dims->block_size = bs;
  dims->block_count = o.selected_block_count;
  return absl::OkStatus();
}

// actual_seq_qlen / actual_seq_kvlen: cumulative, non-decreasing, ending at
// T1 / T2; every key/value batch holds whole blocks, at least K of them.
absl::Status CheckSequences(const NsaOptions& o, int64_t max_batch,
                            NsaDims* dims) {
  const std::vector<int64_t>& q = o.actual_seq_qlen;
  const std::vector<int64_t>& kv = o.actual_seq_kvlen;
  if (q.empty()) {
    return InvalidField("actual_seq_qlen",
                        "is required for layout TND (cumulative query "
                        "lengths, one per batch)");
  }
  if (kv.empty()) {
    return InvalidField("actual_seq_kvlen",
                        "is required for layout TND (cumulative key/value "
                        "lengths, one per batch)");
  }
  dims->b = static_cast<int64_t>(q.size());
  ATTN_RETURN_IF_ERROR(
      CheckRange(dims->b, 1, max_batch, "actual_seq_qlen", "batch count B"));
  if (kv.size() != q.size()) {
    return InvalidField(
        "actual_seq_kvlen",
        absl::StrCat("must have one entry per batch like actual_seq_qlen (",
                     q.size(), "), got ", kv.size()));
  }
  const int64_t bs = dims->block_size;
  const int64_t min_kv = bs * dims->block_count;
  int64_t prev_q = 0, prev_kv = 0;
  for (size_t b = 0; b < q.size(); ++b) {
    const std::string qf = absl::StrCat("actual_seq_qlen[", b, "]");
    const std::string kf = absl::StrCat("actual_seq_kvlen[", b, "]");
    const int64_t sq = q[b] - prev_q;
    if (q[b] < prev_q) {
      return InvalidField(
          qf, absl::StrCat("cumulative lengths must not decrease: ", q[b],
                           " < ", prev_q));
    }
    if (sq > kMaxSeqPerBatch) {
      return InvalidField(
          qf, absl::StrCat("batch length ", sq, " exceeds the maximum ",
                           kMaxSeqPerBatch));
    }
    if (kv[b] < prev_kv) {
      return InvalidField(
          kf, absl::StrCat("cumulative lengths must not decrease: ", kv[b],
                           " < ", prev_kv));
    }
    const int64_t skv = kv[b] - prev_kv;
    if (skv < min_kv || skv % bs != 0 || skv > kMaxSeqPerBatch) {
      return InvalidField(
          kf,
          absl::StrCat("key/value length of batch ", b, " is ", skv,
                       "; it must be a multiple of selected_block_size=", bs,
                       ", at least selected_block_size * "
                       "selected_block_count = ",
                       min_kv, " and at most ", kMaxSeqPerBatch));
    }
    dims->max_skv = std::max(dims->max_skv, skv);
    prev_q = q[b];
    prev_kv = kv[b];
  }
  if (prev_q != dims->t1) {
    return InvalidField(
        absl::StrCat("actual_seq_qlen[", q.size() - 1, "]"),
        absl::StrCat("last cumulative length must equal T1 = query.shape[0] = ",
                     dims->t1, ", got ", prev_q));
  }
  if (prev_kv != dims->t2) {
    return InvalidField(
        absl::StrCat("actual_seq_kvlen[", kv.size() - 1, "]"),
        absl::StrCat("last cumulative length must equal T2 = key.shape[0] = ",
                     dims->t2, ", got ", prev_kv));
  }
  return absl::OkStatus();
}

// sparse_mode 0 uses no mask; sparse_mode 2 accepts none or the standard
// compressed causal mask (whose contents the causal rule reproduces).
absl::Status CheckMask(const NsaOptions& o, const NsaDims& dims) {
  if (!o.atten_mask.has_value()) return absl::OkStatus();
  if (!dims.causal) {
    return InvalidField("atten_mask",
                        "is only used with sparse_mode 2 (causal); "
                        "sparse_mode 0 attends every selected key");
  }
  const TensorView& m = *o.atten_mask;
  if (m.dtype != DType::kBool && m.dtype != DType::kUInt8) {
    return InvalidField("atten_mask.dtype",
                        absl::StrCat("must be BOOL or UINT8 (1 = masked), got ",
                                     DTypeName(m.dtype)));
  }
  ATTN_RETURN_IF_ERROR(
      CheckShape(m, {kCausalMaskSide, kCausalMaskSide}, "atten_mask"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(m, "atten_mask"));
  const auto* cells = static_cast<const uint8_t*>(m.data);
  for (int64_t i = 0; i < kCausalMaskSide; ++i) {
    const uint8_t* row = cells + i * kCausalMaskSide;
    for (int64_t j = 0; j < kCausalMaskSide; ++j) {
      if (row[j] != (j > i ? 1 : 0)) {
        return InvalidField(
            "atten_mask",
            absl::StrCat("sparse_mode 2 takes the standard compressed causal "
                         "mask (1 strictly above the diagonal) or none; "
                         "cell [",
                         i, ", ", j, "] is ", row[j]));
      }
    }
  }
  return absl::OkStatus();
}

// topk_indices: INT32 [T1, N2, K], every index inside its batch's block
// range. Returns the number of (token, kv head, key) slots attended.
absl::StatusOr<int64_t> CheckIndices(const TensorView& topk,
                                     const NsaOptions& o, const NsaDims& d) {
  ATTN_RETURN_IF_ERROR(
      CheckDType(topk, DType::kInt32, "topk_indices", "block indices"));
  ATTN_RETURN_IF_ERROR(
      CheckShape(topk, {d.t1, d.n2, d.block_count}, "topk_indices"));
  ATTN_RETURN_IF_ERROR(CheckByteSize(topk, "topk_indices"));
  const auto* bytes = static_cast<const char*>(topk.data);
  const int64_t bs = d.block_size;
  int64_t attended = 0;
  int64_t t = 0;
  int32_t row[kMaxBlockCount];
  for (int64_t b = 0; b < d.b; ++b) {
    const int64_t q0 = b == 0 ? 0 : o.actual_seq_qlen[b - 1];
    const int64_t kv0 = b == 0 ? 0 : o.actual_seq_kvlen[b - 1];
    const int64_t blocks = (o.actual_seq_kvlen[b] - kv0) / bs;
    for (; t < o.actual_seq_qlen[b]; ++t) {
      const int64_t i = t - q0;
      for (int64_t n2 = 0; n2 < d.n2; ++n2) {
        const int64_t first = (t * d.n2 + n2) * d.block_count;
        std::memcpy(row, bytes + first * 4,
                    static_cast<size_t>(d.block_count) * 4);
        for (int64_t c = 0; c < d.block_count; ++c) {
          const int64_t idx = row[c];
          if (idx < 0 || idx >= blocks) {
            return InvalidField(
                absl::StrCat("topk_indices[", t, ",", n2, ",", c, "]"),
                absl::StrCat("block index ", idx, " must be in [0, ", blocks,
                             ") for batch ", b, " (key/value length ",
                             blocks * bs, " / selected_block_size ", bs, ")"));
          }
          attended +=
              d.causal ? std::clamp<int64_t>(i - idx * bs + 1, 0, bs) : bs;
        }
      }
    }
  }
  return attended * d.g;
}

absl::StatusOr<NsaDims> ResolveNsa(const TensorView& q, const TensorView& k,
                                   const TensorView& v, const TensorView& topk,
                                   const NsaOptions& o, int64_t max_batch,
                                   int64_t* attended) {
  ATTN_ASSIGN_OR_RETURN(NsaDims dims, ResolveTensors(q, k, v, o));
  ATTN_RETURN_IF_ERROR(CheckScalars(o, &dims));
  ATTN_RETURN_IF_ERROR(CheckSequences(o, max_batch, &dims));
  ATTN_RETURN_IF_ERROR(CheckMask(o, dims));
  ATTN_ASSIGN_OR_RETURN(*attended, CheckIndices(topk, o, dims));
  return dims;
}

int64_t TileTokens(const NsaDims& d) {
  return std::clamp<int64_t>(kMaxTileRows / d.g, 1, kMaxTileTokens);
}

std::vector<int64_t> StatShape(const NsaDims& d) {
  return {d.t1, d.n1, kSoftmaxLanes};
}

// Partial-sum floats of the backward for chunks of `chunk` tokens.
uint64_t PartialFloats(const NsaOptions& o, const NsaDims& d, int64_t chunk) {
  uint64_t floats = 0;
  for (int64_t b = 0; b < d.b; ++b) {
    const int64_t sq =
        o.actual_seq_qlen[b] - (b == 0 ? 0 : o.actual_seq_qlen[b - 1]);
    const int64_t skv =
        o.actual_seq_kvlen[b] - (b == 0 ? 0 : o.actual_seq_kvlen[b - 1]);
    const int64_t chunks = (sq + chunk - 1) / chunk;
    floats += static_cast<uint64_t>(chunks * d.n2 * skv * (d.d + d.dv));
  }
  return floats;
}

int64_t MaxQueryLength(const NsaOptions& o) {
  int64_t longest = 0, prev = 0;
  for (int64_t end : o.actual_seq_qlen) {
    longest = std::max(longest, end - prev);
    prev = end;
  }
  return longest;
}

}  // namespace

absl::StatusOr<NsaForwardPlan> PlanNsaForward(const NsaForwardArgs& args,
                                              const ThreadPolicy& threads,
                                              bool allow_bf16) {
  NsaForwardPlan plan;
  const NsaOptions& o = args.options;
  ATTN_ASSIGN_OR_RETURN(
      plan.dims, ResolveNsa(args.query, args.key, args.value, args.topk_indices,
                            o, kMaxBatchForward, &plan.attended));
  const NsaDims& d = plan.dims;
  if (d.dv > d.d) {
    return InvalidField(
        "value.shape[2]",
        absl::StrCat("the forward needs Dv <= D (query/key head dim ", d.d,
                     "), got ", d.dv));
  }
  plan.scale = static_cast<float>(o.scale_value);
  plan.flops = 2.0 * static_cast<double>(plan.attended) *
               static_cast<double>(d.d + d.dv);
  plan.outputs = {
      {"attention_out", d.dtype, {d.t1, d.n1, d.dv}},
      {"softmax_max", DType::kFloat32, StatShape(d)},
      {"softmax_sum", DType::kFloat32, StatShape(d)},
  };
  plan.threads = threads.ThreadsFor(
      plan.flops,
      TensorBytes({&args.query, &args.key, &args.value, &args.topk_indices},
                  plan.outputs));
  plan.token_tile = TileTokens(d);
  plan.products = ChooseTileProducts(d.dtype, allow_bf16);
  // The kernel's own layout, per thread: the keys and values of one (batch,
  // kv head), the tile's query rows, its per-block scores and its output.
  plan.workspace_bytes =
      NsaForwardThreadBytes(d, plan.token_tile, plan.products) *
      static_cast<uint64_t>(plan.threads);
  return plan;
}

absl::StatusOr<NsaBackwardPlan> PlanNsaBackward(const NsaBackwardArgs& args,
                                                const ThreadPolicy& threads,
                                                bool allow_bf16) {
  NsaBackwardPlan plan;
  const NsaOptions& o = args.options;
  ATTN_ASSIGN_OR_RETURN(
      plan.dims, ResolveNsa(args.query, args.key, args.value, args.topk_indices,
                            o, kMaxBatchGrad, &plan.attended));
  const NsaDims& d = plan.dims;
  const std::vector<int64_t> out_shape = {d.t1, d.n1, d.dv};
  for (const auto& [t, name] :
       {std::pair{&args.attention_out, "attention_out"},
        std::pair{&args.attention_out_grad, "attention_out_grad"}}) {
    ATTN_RETURN_IF_ERROR(CheckDType(*t, d.dtype, name, "same as query"));
    ATTN_RETURN_IF_ERROR(CheckShape(*t, out_shape, name));
    ATTN_RETURN_IF_ERROR(CheckByteSize(*t, name));
  }
  for (const auto& [t, name] : {std::pair{&args.softmax_max, "softmax_max"},
                                std::pair{&args.softmax_sum, "softmax_sum"}}) {
    ATTN_RETURN_IF_ERROR(
        CheckDType(*t, DType::kFloat32, name, "softmax statistics"));
    ATTN_RETURN_IF_ERROR(CheckShape(*t, StatShape(d), name));
    ATTN_RETURN_IF_ERROR(CheckByteSize(*t, name));
  }
  // Every key/value batch holds at least K blocks: every row is read.
  ATTN_RETURN_IF_ERROR(CheckSoftmaxStatistics(
      args.softmax_max, args.softmax_sum, {{0, d.t1 * d.n1 * kSoftmaxLanes}}));
  plan.scale = static_cast<float>(o.scale_value);
  plan.flops = 2.0 * static_cast<double>(plan.attended) *
               static_cast<double>(3 * d.d + 2 * d.dv);
  plan.outputs = {
      {"dq", d.dtype, {d.t1, d.n1, d.d}},
      {"dk", d.dtype, {d.t2, d.n2, d.d}},
      {"dv", d.dtype, {d.t2, d.n2, d.dv}},
  };
  plan.threads = threads.ThreadsFor(
      plan.flops,
      TensorBytes({&args.query, &args.key, &args.value, &args.attention_out,
                   &args.attention_out_grad, &args.topk_indices},
                  plan.outputs));

  // Chunking depends on the shapes only (never on `threads`), so the dK/dV
  // sums are the same bits for every thread count.
  const int64_t longest = std::max<int64_t>(1, MaxQueryLength(o));
  const int64_t wanted_chunks =
      std::max<int64_t>(1, (kTargetChunkItems + d.n2 - 1) / d.n2);
  int64_t chunk = std::max<int64_t>(kMinChunkTokens,
                                    (d.t1 + wanted_chunks - 1) / wanted_chunks);
  while (chunk < longest &&
         PartialFloats(o, d, chunk) * 4 > kPartialBudgetBytes) {
    chunk *= 2;
  }
  plan.chunk_tokens = std::min(chunk, longest);
  plan.token_tile = TileTokens(d);
  plan.products = ChooseTileProducts(d.dtype, allow_bf16);
  // The chunks' fp32 dK/dV partial sums (whole cache lines), then the
  // kernel's own per-thread layout.
  const uint64_t partial_bytes =
      (PartialFloats(o, d, plan.chunk_tokens) + 15) / 16 * 64;
  plan.workspace_bytes =
      partial_bytes +
      NsaBackwardThreadBytes(d, plan.token_tile, plan.products) *
          static_cast<uint64_t>(plan.threads);
  return plan;
}

}  // namespace attnserve::core
