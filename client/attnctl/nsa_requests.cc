#include "attnctl/nsa_requests.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {
namespace {

absl::StatusOr<v1::Tensor> TokenInput(const Workload& w, int64_t tokens,
                                      int64_t heads, int64_t dim, Input input) {
  return RandomInput(w, {tokens, heads, dim}, input);
}

// `count` distinct values of [lo, hi) in random order (hi - lo >= count).
void Draw(int64_t lo, int64_t hi, int64_t count, std::mt19937_64& gen,
          std::vector<int32_t>* out) {
  std::vector<int32_t> pool(static_cast<size_t>(hi - lo));
  std::iota(pool.begin(), pool.end(), static_cast<int32_t>(lo));
  for (int64_t i = 0; i < count; ++i) {
    std::uniform_int_distribution<size_t> pick(static_cast<size_t>(i),
                                               pool.size() - 1);
    std::swap(pool[static_cast<size_t>(i)], pool[pick(gen)]);
    out->push_back(pool[static_cast<size_t>(i)]);
  }
}

template <typename Request>
void SetNsaOptions(const Workload& w, Request* r) {
  for (int64_t b = 1; b <= w.batch; ++b) {
    r->add_actual_seq_qlen(b * w.sq);
    r->add_actual_seq_kvlen(b * w.skv);
  }
  r->set_scale_value(w.scale);
  r->set_selected_block_size(w.block_size);
  r->set_selected_block_count(w.block_count);
  r->set_head_num(w.head_num);
  r->set_input_layout("TND");
  r->set_sparse_mode(w.sparse_mode);
}

}  // namespace

absl::Status ValidateNsaWorkload(const Workload& w) {
  absl::Status positive = CheckPositive({{"b", w.batch},
                                         {"n", w.heads},
                                         {"kv_heads", w.kv_heads},
                                         {"sq", w.sq},
                                         {"skv", w.skv},
                                         {"d", w.head_dim},
                                         {"dv", w.value_dim},
                                         {"block_size", w.block_size},
                                         {"block_count", w.block_count}});
  if (!positive.ok()) return positive;
  if (w.skv < w.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--skv: must hold at least one block of --block_size=", w.block_size,
        ", got ", w.skv));
  }
  return absl::OkStatus();
}

std::vector<int32_t> RandomTopk(const Workload& w) {
  std::mt19937_64 gen(InputSeed(w.seed, Input::kTopk));
  const int64_t blocks = w.skv / w.block_size;
  const int64_t k = w.block_count;
  std::vector<int32_t> topk;
  topk.reserve(static_cast<size_t>(w.batch * w.sq * w.kv_heads * k));
  for (int64_t t = 0; t < w.batch * w.sq; ++t) {
    const int64_t i = t % w.sq;
    // Blocks a causal query can see: up to and including its own.
    const int64_t visible =
        w.sparse_mode == 2 ? std::min(blocks, i / w.block_size + 1) : blocks;
    for (int64_t n2 = 0; n2 < w.kv_heads; ++n2) {
      if (blocks < k) {  // Not enough blocks: repeat (the server refuses).
        for (int64_t c = 0; c < k; ++c) {
          topk.push_back(static_cast<int32_t>(c % blocks));
        }
      } else if (visible >= k) {
        Draw(0, visible, k, gen, &topk);
      } else {
        Draw(0, visible, visible, gen, &topk);
        Draw(visible, blocks, k - visible, gen, &topk);
      }
    }
  }
  return topk;
}

absl::StatusOr<v1::NsaSelectedAttentionRequest> MakeNsaForwardRequest(
    const Workload& w) {
  absl::Status valid = ValidateNsaWorkload(w);
  if (!valid.ok()) return valid;
  const int64_t t1 = w.batch * w.sq, t2 = w.batch * w.skv;
  v1::NsaSelectedAttentionRequest request;
  absl::StatusOr<v1::Tensor> q =
      TokenInput(w, t1, w.heads, w.head_dim, Input::kQuery);
  if (!q.ok()) return q.status();
  absl::StatusOr<v1::Tensor> k =
      TokenInput(w, t2, w.kv_heads, w.head_dim, Input::kKey);
  if (!k.ok()) return k.status();
  absl::StatusOr<v1::Tensor> v =
      TokenInput(w, t2, w.kv_heads, w.value_dim, Input::kValue);
  if (!v.ok()) return v.status();
  absl::StatusOr<v1::Tensor> topk =
      MakeInt32Tensor(RandomTopk(w), {t1, w.kv_heads, w.block_count});
  if (!topk.ok()) return topk.status();
  *request.mutable_query() = *std::move(q);
  *request.mutable_key() = *std::move(k);
  *request.mutable_value() = *std::move(v);
  *request.mutable_topk_indices() = *std::move(topk);
  SetNsaOptions(w, &request);
  return request;
}

absl::StatusOr<v1::NsaSelectedAttentionGradRequest> MakeNsaGradRequest(
    const Workload& w, v1::NsaSelectedAttentionRequest forward,
    v1::NsaSelectedAttentionResponse result) {
  v1::NsaSelectedAttentionGradRequest request;
  absl::StatusOr<v1::Tensor> dy =
      TokenInput(w, w.batch * w.sq, w.heads, w.value_dim, Input::kDy);
  if (!dy.ok()) return dy.status();
  *request.mutable_attention_out_grad() = *std::move(dy);
  request.mutable_query()->Swap(forward.mutable_query());
  request.mutable_key()->Swap(forward.mutable_key());
  request.mutable_value()->Swap(forward.mutable_value());
  request.mutable_topk_indices()->Swap(forward.mutable_topk_indices());
  request.mutable_attention_out()->Swap(result.mutable_attention_out());
  request.mutable_softmax_max()->Swap(result.mutable_softmax_max());
  request.mutable_softmax_sum()->Swap(result.mutable_softmax_sum());
  SetNsaOptions(w, &request);
  return request;
}

}  // namespace attnserve::attnctl
