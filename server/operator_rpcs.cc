#include "server/operator_rpcs.h"

#include <utility>

#include "server/proto_convert.h"

namespace attnserve::server {
namespace {

// The three outputs of both forward operators, moved (not copied).
void MoveForwardOutputs(core::ForwardResult result, v1::Tensor* attention_out,
                        v1::Tensor* softmax_max, v1::Tensor* softmax_sum,
                        wire::OutgoingPayloads* outgoing) {
  MoveToProto(std::move(result.attention_out), attention_out, outgoing);
  MoveToProto(std::move(result.softmax_max), softmax_max, outgoing);
  MoveToProto(std::move(result.softmax_sum), softmax_sum, outgoing);
}

// dq, dk and dv of both grad operators, moved.
void MoveGradOutputs(core::BackwardResult& result, v1::Tensor* dq,
                     v1::Tensor* dk, v1::Tensor* dv,
                     wire::OutgoingPayloads* outgoing) {
  MoveToProto(std::move(result.dq), dq, outgoing);
  MoveToProto(std::move(result.dk), dk, outgoing);
  MoveToProto(std::move(result.dv), dv, outgoing);
}

}  // namespace

absl::StatusOr<FlashAttentionScoreRpc::Args> FlashAttentionScoreRpc::ToArgs(
    const Request& request, wire::RequestPayloads* payloads) {
  return ToForwardArgs(request, payloads);
}

void FlashAttentionScoreRpc::Respond(Result result, Response* response,
                                     wire::OutgoingPayloads* outgoing) {
  MoveForwardOutputs(std::move(result), response->mutable_attention_out(),
                     response->mutable_softmax_max(),
                     response->mutable_softmax_sum(), outgoing);
}

absl::StatusOr<FlashAttentionScoreGradRpc::Args>
FlashAttentionScoreGradRpc::ToArgs(const Request& request,
                                   wire::RequestPayloads* payloads) {
  return ToBackwardArgs(request, payloads);
}

void FlashAttentionScoreGradRpc::Respond(Result result, Response* response,
                                         wire::OutgoingPayloads* outgoing) {
  MoveGradOutputs(result, response->mutable_dq(), response->mutable_dk(),
                  response->mutable_dv(), outgoing);
  if (result.dpse.has_value()) {
    MoveToProto(std::move(*result.dpse), response->mutable_dpse(), outgoing);
  }
}

absl::StatusOr<NsaSelectedAttentionRpc::Args> NsaSelectedAttentionRpc::ToArgs(
    const Request& request, wire::RequestPayloads* payloads) {
  return ToNsaForwardArgs(request, payloads);
}

void NsaSelectedAttentionRpc::Respond(Result result, Response* response,
                                      wire::OutgoingPayloads* outgoing) {
  MoveForwardOutputs(std::move(result), response->mutable_attention_out(),
                     response->mutable_softmax_max(),
                     response->mutable_softmax_sum(), outgoing);
}

absl::StatusOr<NsaSelectedAttentionGradRpc::Args>
NsaSelectedAttentionGradRpc::ToArgs(const Request& request,
                                    wire::RequestPayloads* payloads) {
  return ToNsaBackwardArgs(request, payloads);
}

void NsaSelectedAttentionGradRpc::Respond(Result result, Response* response,
                                          wire::OutgoingPayloads* outgoing) {
  MoveGradOutputs(result, response->mutable_dq(), response->mutable_dk(),
                  response->mutable_dv(), outgoing);
}

}  // namespace attnserve::server
