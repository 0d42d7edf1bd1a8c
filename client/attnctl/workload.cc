#include "attnctl/workload.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {
namespace {

// Distinct, reproducible seeds for the inputs of one workload.
enum InputIndex : uint64_t { kQuery = 0, kKey = 1, kValue = 2, kDy = 3 };

uint64_t InputSeed(uint64_t seed, InputIndex index) {
  // SplitMix64 finalizer: nearby seeds give unrelated streams.
  uint64_t z = seed * 4 + index + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

absl::StatusOr<v1::Tensor> RandomInput(const Workload& w, int64_t heads,
                                       int64_t seq, InputIndex index) {
  absl::StatusOr<std::vector<int64_t>> shape =
      LayoutShape(w.layout, w.batch, heads, seq, w.head_dim);
  if (!shape.ok()) return shape.status();
  return MakeRandomTensor(*shape, w.dtype, InputSeed(w.seed, index));
}

absl::Status CheckPositive(const char* flag, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": must be positive, got ", value));
}

}  // namespace

absl::Status ValidateWorkload(const Workload& w) {
  for (const auto& [flag, value] :
       {std::pair{"b", w.batch}, std::pair{"n", w.heads},
        std::pair{"kv_heads", w.kv_heads}, std::pair{"sq", w.sq},
        std::pair{"skv", w.skv}, std::pair{"d", w.head_dim}}) {
    absl::Status s = CheckPositive(flag, value);
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::vector<int64_t>> shape =
      LayoutShape(w.layout, 1, 1, 1, 1);
  if (!shape.ok()) return shape.status();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> LayoutShape(const std::string& layout,
                                                 int64_t b, int64_t n,
                                                 int64_t s, int64_t d) {
  if (layout == "BSH") return std::vector<int64_t>{b, s, n * d};
  if (layout == "SBH") return std::vector<int64_t>{s, b, n * d};
  if (layout == "BSND") return std::vector<int64_t>{b, s, n, d};
  if (layout == "BNSD") return std::vector<int64_t>{b, n, s, d};
  return absl::InvalidArgumentError(absl::StrCat(
      "--layout: must be BSH, SBH, BSND or BNSD, got \"", layout, "\""));
}

absl::StatusOr<v1::FlashAttentionScoreRequest> MakeForwardRequest(
    const Workload& w) {
  absl::Status valid = ValidateWorkload(w);
  if (!valid.ok()) return valid;
  v1::FlashAttentionScoreRequest request;
  absl::StatusOr<v1::Tensor> q = RandomInput(w, w.heads, w.sq, kQuery);
  if (!q.ok()) return q.status();
  absl::StatusOr<v1::Tensor> k = RandomInput(w, w.kv_heads, w.skv, kKey);
  if (!k.ok()) return k.status();
  absl::StatusOr<v1::Tensor> v = RandomInput(w, w.kv_heads, w.skv, kValue);
  if (!v.ok()) return v.status();
  *request.mutable_query() = *std::move(q);
  *request.mutable_key() = *std::move(k);
  *request.mutable_value() = *std::move(v);
  if (w.causal_mask) {
    absl::StatusOr<v1::Tensor> mask = MakeCausalMask(w.sq, w.skv);
    if (!mask.ok()) return mask.status();
    *request.mutable_atten_mask() = *std::move(mask);
  }
  request.set_scale_value(w.scale);
  request.set_head_num(w.head_num);
  request.set_input_layout(w.layout);
  request.set_sparse_mode(0);
  return request;
}

absl::StatusOr<v1::FlashAttentionScoreGradRequest> MakeGradRequest(
    const Workload& w, v1::FlashAttentionScoreRequest forward,
    v1::FlashAttentionScoreResponse result) {
  v1::FlashAttentionScoreGradRequest request;
  absl::StatusOr<v1::Tensor> dy = RandomInput(w, w.heads, w.sq, kDy);
  if (!dy.ok()) return dy.status();
  *request.mutable_dy() = *std::move(dy);
  request.mutable_query()->Swap(forward.mutable_query());
  request.mutable_key()->Swap(forward.mutable_key());
  request.mutable_value()->Swap(forward.mutable_value());
  if (forward.has_atten_mask()) {
    request.mutable_atten_mask()->Swap(forward.mutable_atten_mask());
  }
  request.mutable_softmax_max()->Swap(result.mutable_softmax_max());
  request.mutable_softmax_sum()->Swap(result.mutable_softmax_sum());
  request.mutable_attention_in()->Swap(result.mutable_attention_out());
  request.set_scale_value(forward.scale_value());
  request.set_head_num(forward.head_num());
  request.set_input_layout(forward.input_layout());
  request.set_sparse_mode(forward.sparse_mode());
  return request;
}

}  // namespace attnserve::attnctl
