// The compute RPCs, one small traits type each: which messages, which core
// operator, how a request becomes the operator's arguments and how a result
// fills the response. Everything else (guard, preparing, response-size
// check, admission, running, stats, logging, GetWorkspaceSize) is the
// pipeline's (rpc_pipeline.h), written once for all of them.
//
//   using Rpc = NsaSelectedAttentionRpc;
//   ATTN_ASSIGN_OR_RETURN(Rpc::Args args,
//                         Rpc::ToArgs(request, &handles, &payloads));
//   ...
//   Rpc::Respond(std::move(result), &response, sink);
//
// ToArgs resolves tensors sent by handle through its HandleResolver and
// reads tensors' data from the request's received payloads when given them;
// Respond hands every output to its OutputSink (proto_convert.h), which puts
// it into the response (as a payload sent from its buffer, on the byte-level
// path) or keeps it on the server: the pipeline's resident tensors and
// byte-level path come in through these two, for every RPC.
//
// A new operator RPC is a traits type here, its entry in OperatorRpcs, and
// its one-line method in AttentionService.
#ifndef ATTNSERVE_SERVER_OPERATOR_RPCS_H_
#define ATTNSERVE_SERVER_OPERATOR_RPCS_H_

#include "absl/status/statusor.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/v1/attention.pb.h"
#include "server/proto_convert.h"

namespace attnserve::server {

// What every compute RPC's traits declare: its request and response, its
// core operator, and the member of GetWorkspaceSizeRequest.op holding the
// same request.
template <typename RequestT, typename ResponseT, typename OpT,
          v1::GetWorkspaceSizeRequest::OpCase kSizeCaseV>
struct OperatorRpc {
  using Request = RequestT;
  using Response = ResponseT;
  using Op = OpT;
  using Args = typename OpT::Args;
  using Result = typename OpT::Result;
  using Call = core::PreparedCall<OpT>;
  static constexpr const char* kName = OpT::kName;
  static constexpr v1::GetWorkspaceSizeRequest::OpCase kSizeCase = kSizeCaseV;
};

struct FlashAttentionScoreRpc
    : OperatorRpc<v1::FlashAttentionScoreRequest,
                  v1::FlashAttentionScoreResponse, core::FlashAttentionScoreOp,
                  v1::GetWorkspaceSizeRequest::kFlashAttentionScore> {
  static absl::StatusOr<Args> ToArgs(const Request& request,
                                     HandleResolver* handles = nullptr,
                                     wire::RequestPayloads* payloads = nullptr);
  static void Respond(Result result, Response* response,
                      OutputSink& sink = MoveToResponse());
};

struct FlashAttentionScoreGradRpc
    : OperatorRpc<v1::FlashAttentionScoreGradRequest,
                  v1::FlashAttentionScoreGradResponse,
                  core::FlashAttentionScoreGradOp,
                  v1::GetWorkspaceSizeRequest::kFlashAttentionScoreGrad> {
  static absl::StatusOr<Args> ToArgs(const Request& request,
                                     HandleResolver* handles = nullptr,
                                     wire::RequestPayloads* payloads = nullptr);
  static void Respond(Result result, Response* response,
                      OutputSink& sink = MoveToResponse());
};

struct NsaSelectedAttentionRpc
    : OperatorRpc<v1::NsaSelectedAttentionRequest,
                  v1::NsaSelectedAttentionResponse,
                  core::NsaSelectedAttentionOp,
                  v1::GetWorkspaceSizeRequest::kNsaSelectedAttention> {
  static absl::StatusOr<Args> ToArgs(const Request& request,
                                     HandleResolver* handles = nullptr,
                                     wire::RequestPayloads* payloads = nullptr);
  static void Respond(Result result, Response* response,
                      OutputSink& sink = MoveToResponse());
};

struct NsaSelectedAttentionGradRpc
    : OperatorRpc<v1::NsaSelectedAttentionGradRequest,
                  v1::NsaSelectedAttentionGradResponse,
                  core::NsaSelectedAttentionGradOp,
                  v1::GetWorkspaceSizeRequest::kNsaSelectedAttentionGrad> {
  static absl::StatusOr<Args> ToArgs(const Request& request,
                                     HandleResolver* handles = nullptr,
                                     wire::RequestPayloads* payloads = nullptr);
  static void Respond(Result result, Response* response,
                      OutputSink& sink = MoveToResponse());
};

// A list of RPC traits types, visited in order.
template <typename... Rpcs>
struct RpcList {
  // Calls f(Rpc{}) for each traits type.
  template <typename F>
  static void ForEach(F&& f) {
    (f(Rpcs{}), ...);
  }
};

// Every compute RPC: GetWorkspaceSize and GetServerInfo list them from here.
using OperatorRpcs =
    RpcList<FlashAttentionScoreRpc, FlashAttentionScoreGradRpc,
            NsaSelectedAttentionRpc, NsaSelectedAttentionGradRpc>;

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_OPERATOR_RPCS_H_
