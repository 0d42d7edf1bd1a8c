// The cases of attnload's mixed mode (--mix): each a compact spec of one
// request, repeated with the same inputs whenever a caller picks it.
//
//   OP[:TOKEN]...   e.g. bwd:bf16:TND:b3:n8:kv2:s256:d64:mode3
//
// OP is fwd (FlashAttentionScore), bwd (FlashAttentionScoreGrad), nsa-fwd
// (NsaSelectedAttention) or nsa-bwd (NsaSelectedAttentionGrad). Tokens, in
// any order, change the defaults (attnload's -b -n -s -d --layout --dtype
// --seed): a dtype (fp32, fp16, bf16), a layout (BSH, SBH, BSND, BNSD, TND),
// b<N> batches, n<N> query heads (and key/value heads unless kv<N> is
// given), s<N> (or sq<N> and skv<N>) sequence lengths, d<N> head dim (and
// value head dim unless dv<N> is given; the scale is 1/sqrt(d)), causal (a
// full [Sq,Skv] BOOL mask, sparse_mode 0), mode<N> (sparse_mode), bs<N> and
// bc<N> (NSA block size and count), seed<N>.
#ifndef ATTNSERVE_CLIENT_ATTNLOAD_MIX_H_
#define ATTNSERVE_CLIENT_ATTNLOAD_MIX_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnctl/workload.h"

namespace attnserve::attnload {

enum class MixOp { kForward, kBackward, kNsaForward, kNsaBackward };

// The RPC of `op`, e.g. "FlashAttentionScoreGrad".
absl::string_view MixOpRpc(MixOp op);

struct MixCase {
  std::string spec;
  MixOp op = MixOp::kForward;
  attnctl::Workload workload;
};

// The case of `spec` on top of `defaults`; INVALID_ARGUMENT naming the
// token that is not understood or a workload the request builders refuse.
absl::StatusOr<MixCase> ParseMixCase(absl::string_view spec,
                                     const attnctl::Workload& defaults);

}  // namespace attnserve::attnload

#endif  // ATTNSERVE_CLIENT_ATTNLOAD_MIX_H_
