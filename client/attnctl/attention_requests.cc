#include "attnctl/attention_requests.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {
namespace {

// A random q-like (`seq` = sq) or kv-like tensor in the workload's layout.
absl::StatusOr<v1::Tensor> LayoutInput(const Workload& w, int64_t heads,
                                       int64_t seq, Input input) {
  absl::StatusOr<std::vector<int64_t>> shape =
      LayoutShape(w.layout, w.batch, heads, seq, w.head_dim);
  if (!shape.ok()) return shape.status();
  return RandomInput(w, *shape, input);
}

}  // namespace

absl::Status ValidateAttentionWorkload(const Workload& w) {
  absl::Status positive = CheckPositive({{"b", w.batch},
                                         {"n", w.heads},
                                         {"kv_heads", w.kv_heads},
                                         {"sq", w.sq},
                                         {"skv", w.skv},
                                         {"d", w.head_dim}});
  if (!positive.ok()) return positive;
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
  if (layout == "TND") {
    int64_t t = 0;
    for (int64_t len : TndLengths(s, b)) t += len;
    return std::vector<int64_t>{t, n, d};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--layout: must be BSH, SBH, BSND, BNSD or TND, got \"", layout, "\""));
}

std::vector<int64_t> TndLengths(int64_t s, int64_t batch) {
  std::vector<int64_t> lengths;
  for (int64_t i = 0; i < batch; ++i) {
    lengths.push_back(s - i * (s / (2 * batch)));
  }
  return lengths;
}

absl::StatusOr<v1::FlashAttentionScoreRequest> MakeForwardRequest(
    const Workload& w) {
  absl::Status valid = ValidateAttentionWorkload(w);
  if (!valid.ok()) return valid;
  v1::FlashAttentionScoreRequest request;
  absl::StatusOr<v1::Tensor> q = LayoutInput(w, w.heads, w.sq, Input::kQuery);
  if (!q.ok()) return q.status();
  absl::StatusOr<v1::Tensor> k = LayoutInput(w, w.kv_heads, w.skv, Input::kKey);
  if (!k.ok()) return k.status();
  absl::StatusOr<v1::Tensor> v =
      LayoutInput(w, w.kv_heads, w.skv, Input::kValue);
  if (!v.ok()) return v.status();
  *request.mutable_query() = *std::move(q);
  *request.mutable_key() = *std::move(k);
  *request.mutable_value() = *std::move(v);
  if (w.causal_mask) {
    absl::StatusOr<v1::Tensor> mask = MakeCausalMask(w.sq, w.skv);
    if (!mask.ok()) return mask.status();
    *request.mutable_atten_mask() = *std::move(mask);
  }
  if (w.layout == "TND") {
    int64_t q_end = 0, kv_end = 0;
    for (int64_t len : TndLengths(w.sq, w.batch)) {
      request.add_actual_seq_qlen(q_end += len);
    }
    for (int64_t len : TndLengths(w.skv, w.batch)) {
      request.add_actual_seq_kvlen(kv_end += len);
    }
  }
  request.set_scale_value(w.scale);
  request.set_head_num(w.head_num);
  request.set_input_layout(w.layout);
  request.set_sparse_mode(w.sparse_mode);
  return request;
}

absl::StatusOr<v1::FlashAttentionScoreGradRequest> MakeGradRequest(
    const Workload& w, v1::FlashAttentionScoreRequest forward,
    v1::FlashAttentionScoreResponse result) {
  v1::FlashAttentionScoreGradRequest request;
  absl::StatusOr<v1::Tensor> dy = LayoutInput(w, w.heads, w.sq, Input::kDy);
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
  *request.mutable_actual_seq_qlen() = forward.actual_seq_qlen();
  *request.mutable_actual_seq_kvlen() = forward.actual_seq_kvlen();
  request.set_scale_value(forward.scale_value());
  request.set_head_num(forward.head_num());
  request.set_input_layout(forward.input_layout());
  request.set_sparse_mode(forward.sparse_mode());
  return request;
}

}  // namespace attnserve::attnctl
