#include "server/operator_rpcs.h"

#include <utility>

#include "server/proto_convert.h"

namespace attnserve::server {
namespace {

// The three outputs of both forward operators, moved (not copied).
template <typename Response>
void MoveForwardOutputs(core::ForwardResult result, Response* response,
                        OutputSink& sink) {
  sink.Put("attention_out", std::move(result.attention_out),
           response->mutable_attention_out());
  sink.Put("softmax_max", std::move(result.softmax_max),
           response->mutable_softmax_max());
  sink.Put("softmax_sum", std::move(result.softmax_sum),
           response->mutable_softmax_sum());
}

// dq, dk and dv of both grad operators, moved.
template <typename Response>
void MoveGradOutputs(core::BackwardResult& result, Response* response,
                     OutputSink& sink) {
  sink.Put("dq", std::move(result.dq), response->mutable_dq());
  sink.Put("dk", std::move(result.dk), response->mutable_dk());
  sink.Put("dv", std::move(result.dv), response->mutable_dv());
}

}  // namespace

absl::StatusOr<FlashAttentionScoreRpc::Args> FlashAttentionScoreRpc::ToArgs(
    const Request& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  return ToForwardArgs(request, handles, payloads);
}

void FlashAttentionScoreRpc::Respond(Result result, Response* response,
                                     OutputSink& sink) {
  MoveForwardOutputs(std::move(result), response, sink);
}

absl::StatusOr<FlashAttentionScoreGradRpc::Args>
FlashAttentionScoreGradRpc::ToArgs(const Request& request,
                                   HandleResolver* handles,
                                   wire::RequestPayloads* payloads) {
  return ToBackwardArgs(request, handles, payloads);
}

void FlashAttentionScoreGradRpc::Respond(Result result, Response* response,
                                         OutputSink& sink) {
  MoveGradOutputs(result, response, sink);
  if (result.dpse.has_value()) {
    sink.Put("dpse", std::move(*result.dpse), response->mutable_dpse());
  }
}

absl::StatusOr<NsaSelectedAttentionRpc::Args> NsaSelectedAttentionRpc::ToArgs(
    const Request& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  return ToNsaForwardArgs(request, handles, payloads);
}

void NsaSelectedAttentionRpc::Respond(Result result, Response* response,
                                      OutputSink& sink) {
  MoveForwardOutputs(std::move(result), response, sink);
}

absl::StatusOr<NsaSelectedAttentionGradRpc::Args>
NsaSelectedAttentionGradRpc::ToArgs(const Request& request,
                                    HandleResolver* handles,
                                    wire::RequestPayloads* payloads) {
  return ToNsaBackwardArgs(request, handles, payloads);
}

void NsaSelectedAttentionGradRpc::Respond(Result result, Response* response,
                                          OutputSink& sink) {
  MoveGradOutputs(result, response, sink);
}

}  // namespace attnserve::server
