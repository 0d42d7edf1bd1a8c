#include "attnload/mix.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "attnctl/attention_requests.h"
#include "attnctl/nsa_requests.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnload {
namespace {

// The number after `prefix` when `token` is prefix + digits.
std::optional<int64_t> Numbered(absl::string_view token,
                                absl::string_view prefix) {
  int64_t value = 0;
  if (!absl::ConsumePrefix(&token, prefix) || token.empty() ||
      !absl::ascii_isdigit(static_cast<unsigned char>(token[0])) ||
      !absl::SimpleAtoi(token, &value)) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

absl::string_view MixOpRpc(MixOp op) {
  switch (op) {
    case MixOp::kForward:
      return "FlashAttentionScore";
    case MixOp::kBackward:
      return "FlashAttentionScoreGrad";
    case MixOp::kNsaForward:
      return "NsaSelectedAttention";
    case MixOp::kNsaBackward:
      return "NsaSelectedAttentionGrad";
  }
  return "";
}

absl::StatusOr<MixCase> ParseMixCase(absl::string_view spec,
                                     const attnctl::Workload& defaults) {
  MixCase c;
  c.spec = std::string(spec);
  attnctl::Workload& w = c.workload;
  w = defaults;
  const std::vector<absl::string_view> tokens = absl::StrSplit(spec, ':');
  const auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mix: ", what, " in case \"", spec, "\""));
  };
  if (tokens[0] == "fwd") {
    c.op = MixOp::kForward;
  } else if (tokens[0] == "bwd") {
    c.op = MixOp::kBackward;
  } else if (tokens[0] == "nsa-fwd") {
    c.op = MixOp::kNsaForward;
  } else if (tokens[0] == "nsa-bwd") {
    c.op = MixOp::kNsaBackward;
  } else {
    return bad(absl::StrCat("operator \"", tokens[0],
                            "\" is not fwd, bwd, nsa-fwd or nsa-bwd"));
  }
  std::optional<int64_t> kv_heads, value_dim;
  for (size_t i = 1; i < tokens.size(); ++i) {
    const absl::string_view t = tokens[i];
    const std::string upper = absl::AsciiStrToUpper(t);
    std::optional<int64_t> v;
    if (upper == "BSH" || upper == "SBH" || upper == "BSND" ||
        upper == "BNSD" || upper == "TND") {
      w.layout = upper;
    } else if (t == "causal") {
      w.causal_mask = true;
    } else if ((v = Numbered(t, "mode"))) {
      w.sparse_mode = *v;
    } else if ((v = Numbered(t, "seed"))) {
      w.seed = static_cast<uint64_t>(*v);
    } else if ((v = Numbered(t, "bs"))) {
      w.block_size = *v;
    } else if ((v = Numbered(t, "bc"))) {
      w.block_count = *v;
    } else if ((v = Numbered(t, "b"))) {
      w.batch = *v;
    } else if ((v = Numbered(t, "kv"))) {
      kv_heads = *v;
    } else if ((v = Numbered(t, "n"))) {
      w.heads = w.head_num = *v;
    } else if ((v = Numbered(t, "sq"))) {
      w.sq = *v;
    } else if ((v = Numbered(t, "skv"))) {
      w.skv = *v;
    } else if ((v = Numbered(t, "s"))) {
      w.sq = w.skv = *v;
    } else if ((v = Numbered(t, "dv"))) {
      value_dim = *v;
    } else if ((v = Numbered(t, "d"))) {
      w.head_dim = *v;
    } else if (absl::StatusOr<v1::DataType> dtype = ParseDataType(t);
               dtype.ok()) {
      w.dtype = *dtype;
    } else {
      return bad(absl::StrCat("unknown token \"", t, "\""));
    }
  }
  w.kv_heads = kv_heads.value_or(w.heads);
  w.value_dim = value_dim.value_or(w.head_dim);
  w.scale =
      w.head_dim > 0 ? 1.0 / std::sqrt(static_cast<double>(w.head_dim)) : 1.0;
  const bool nsa = c.op == MixOp::kNsaForward || c.op == MixOp::kNsaBackward;
  absl::Status valid = nsa ? attnctl::ValidateNsaWorkload(w)
                           : attnctl::ValidateAttentionWorkload(w);
  if (!valid.ok()) return bad(valid.message());
  return c;
}

}  // namespace attnserve::attnload
