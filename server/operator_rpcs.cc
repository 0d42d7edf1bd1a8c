#include "server/operator_rpcs.h"

#include <utility>

#include "server/proto_convert.h"

namespace attnserve::server {
namespace {

// The three outputs of both forward operators, moved (not copied).
void MoveForwardOutputs(core::ForwardResult result, v1::Tensor* attention_out,
                        v1::Tensor* softmax_max, v1::Tensor* softmax_sum) {
  MoveToProto(std::move(result.attention_out), attention_out);
  MoveToProto(std::move(result.softmax_max), softmax_max);
  MoveToProto(std::move(result.softmax_sum), softmax_sum);
}

// dq, dk and dv of both grad operators, moved.
void MoveGradOutputs(core::BackwardResult& result, v1::Tensor* dq,
                     v1::Tensor* dk, v1::Tensor* dv) {
  MoveToProto(std::move(result.dq), dq);
  MoveToProto(std::move(result.dk), dk);
  MoveToProto(std::move(result.dv), dv);
}

}  // namespace

absl::StatusOr<FlashAttentionScoreRpc::Args> FlashAttentionScoreRpc::ToArgs(
    const Request& request) {
  return ToForwardArgs(request);
}

void FlashAttentionScoreRpc::Respond(Result result, Response* response) {
  MoveForwardOutputs(std::move(result), response->mutable_attention_out(),
                     response->mutable_softmax_max(),
                     response->mutable_softmax_sum());
}

absl::StatusOr<FlashAttentionScoreGradRpc::Args>
FlashAttentionScoreGradRpc::ToArgs(const Request& request) {
  return ToBackwardArgs(request);
}

void FlashAttentionScoreGradRpc::Respond(Result result, Response* response) {
  MoveGradOutputs(result, response->mutable_dq(), response->mutable_dk(),
                  response->mutable_dv());
  if (result.dpse.has_value()) {
    MoveToProto(std::move(*result.dpse), response->mutable_dpse());
  }
}

absl::StatusOr<NsaSelectedAttentionRpc::Args> NsaSelectedAttentionRpc::ToArgs(
    const Request& request) {
  return ToNsaForwardArgs(request);
}

void NsaSelectedAttentionRpc::Respond(Result result, Response* response) {
  MoveForwardOutputs(std::move(result), response->mutable_attention_out(),
                     response->mutable_softmax_max(),
                     response->mutable_softmax_sum());
}

absl::StatusOr<NsaSelectedAttentionGradRpc::Args>
NsaSelectedAttentionGradRpc::ToArgs(const Request& request) {
  return ToNsaBackwardArgs(request);
}

void NsaSelectedAttentionGradRpc::Respond(Result result, Response* response) {
  MoveGradOutputs(result, response->mutable_dq(), response->mutable_dk(),
                  response->mutable_dv());
}

}  // namespace attnserve::server
