// The problem attnctl and attnload send: sizes, dtype and options of one
// operator call, and the random inputs built from them. One Workload serves
// every operator; each reads the fields it needs (attention_requests.h,
// nsa_requests.h).
//
//   Workload w;  // BNSD fp32, b=1, n=8, s=1024, d=128
//   absl::StatusOr<v1::FlashAttentionScoreRequest> req = MakeForwardRequest(w);
#ifndef ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_
#define ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::attnctl {

struct Workload {
  v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  // Batches; NSA: each with `sq` query and `skv` key/value tokens (TND).
  int64_t batch = 1;
  // Query heads (N1) and key/value heads (N2).
  int64_t heads = 8;
  int64_t kv_heads = 8;
  // head_num sent to the server; normally `heads`, different only to probe
  // the server's validation.
  int64_t head_num = 8;
  int64_t sq = 1024;
  int64_t skv = 1024;
  int64_t head_dim = 128;              // D of query and key.
  double scale = 0.08838834764831845;  // 1/sqrt(128)
  // Seeds the random inputs: the same seed gives the same tensors.
  uint64_t seed = 1;

  // FlashAttention: "BSH", "SBH", "BSND", "BNSD" or "TND" (varlen: batches
  // of decreasing lengths, see TndLengths in attention_requests.h).
  std::string layout = "BNSD";
  // FlashAttention: send a full BOOL [sq, skv] top-left causal mask with
  // sparse_mode 0.
  bool causal_mask = false;

  // NSA selected attention.
  int64_t value_dim = 128;  // Dv.
  int64_t block_size = 64;
  int64_t block_count = 16;
  // Sent as the request's sparse_mode. NSA: 0 or 2. FlashAttention: 0 (with
  // causal_mask or none), or a mode that needs no mask tensor (2 leftUpCausal,
  // 3 rightDownCausal, 4 band, ...).
  int64_t sparse_mode = 0;
};

// The inputs of one workload, each with its own random stream.
enum class Input : uint64_t { kQuery, kKey, kValue, kDy, kTopk };

// The seed of `input`'s random values: nearby seeds give unrelated streams.
uint64_t InputSeed(uint64_t seed, Input input);

// A random tensor of `shape` and the workload's dtype, values in [-1, 1).
absl::StatusOr<v1::Tensor> RandomInput(const Workload& w,
                                       const std::vector<int64_t>& shape,
                                       Input input);

// INVALID_ARGUMENT naming the flag ("--kv_heads: must be positive, got 0")
// when one of `flags` (flag name, value) is not positive.
absl::Status CheckPositive(
    std::initializer_list<std::pair<const char*, int64_t>> flags);

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_WORKLOAD_H_
