// Conversion between the wire messages (attnserve.v1) and the core's types.
//
// Inputs become non-owning core::TensorView's pointing into the request's
// `bytes` fields, or, for a request decoded by the wire codec
// (attnserve/wire/message_decoder.h), into the pooled buffers its payloads
// are copied to (RequestPayloads): the request and its payloads must outlive
// every use of the returned args (the server keeps them until the call
// finishes). A tensor sent by `handle` becomes a view of the stored tensor's
// bytes, found through a HandleResolver that keeps it alive for the call (no
// copy either). Outputs go where an OutputSink puts them: into the response
// (as payloads sent from their buffers, attnserve/wire/message_encoder.h,
// or copied into the message) or into the tensor store.
//
//   ATTN_ASSIGN_OR_RETURN(core::ForwardArgs args, ToForwardArgs(request));
//   ... run ...
//   MoveToProto(std::move(result.attention_out),
//               response.mutable_attention_out());
//
// This layer checks only what the wire format itself requires: required
// tensors present, and each tensor's dtype, shape and data length as the
// wire library checks them (attnserve/wire/tensor.h). Every operator rule
// belongs to core::Plan*. Errors are INVALID_ARGUMENT with the field path
// attached (core::FieldOf), e.g. "query.data".
//
// All functions are pure and thread-safe.
#ifndef ATTNSERVE_SERVER_PROTO_CONVERT_H_
#define ATTNSERVE_SERVER_PROTO_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/request_payloads.h"

namespace attnserve::server {

// Where the tensors a request names by `handle` are found (resident
// tensors): the server's tensor store, as seen by one call's caller.
class HandleResolver {
 public:
  virtual ~HandleResolver() = default;
  // A view of the stored tensor `handle`, valid until the call ends (the
  // resolver holds the tensor), for the request field `field` ("key").
  // NOT_FOUND naming "<field>.handle" when there is no such tensor.
  virtual absl::StatusOr<core::TensorView> Resolve(
      const std::string& field, const std::string& handle) = 0;
};

// Where a call's outputs go: moved into the response (MoveToProto), or kept
// on the server (the pipeline's sink, see call_tensors.h).
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  // Puts the output named `field` ("attention_out") into `out`.
  virtual void Put(const std::string& field, core::HostTensor tensor,
                   v1::Tensor* out) = 0;
};

// The sink that moves every output into the response.
OutputSink& MoveToResponse();

// How a tensor received as a payload reaches the core: joined into one
// contiguous buffer, or as the chunks it was received in (only for the
// tensors core::ForwardArgs / BackwardArgs say may be chunked).
enum class PayloadBytes { kContiguous, kChunked };

// A view of `tensor`'s bytes after the wire checks above. `field` is the
// tensor's name in the request ("query"); errors name "query.dtype",
// "query.shape[2]", "query.shape" or "query.data". The view borrows
// `tensor.data()`, or, when `payloads` (may be null) holds the tensor's
// data, that payload: its size is checked first, then it is copied out of
// the received bytes into a buffer, or, with PayloadBytes::kChunked, viewed
// where it was received (TensorView::chunks).
// A tensor sent by `handle` is resolved by `handles` (null: every handle is
// NOT_FOUND "query.handle"); it must carry no data, and the dtype and shape
// it states, if any, must be the stored tensor's (INVALID_ARGUMENT naming
// "query.data", "query.dtype" or "query.shape").
absl::StatusOr<core::TensorView> ToTensorView(
    const v1::Tensor& tensor, const std::string& field,
    HandleResolver* handles = nullptr,
    wire::RequestPayloads* payloads = nullptr,
    PayloadBytes bytes = PayloadBytes::kContiguous);

// Request conversions. Unset optional scalars take the documented defaults
// (scale_value 1.0, keep_prob 1.0, pre/next_tokens 2147483647, pse_type 1);
// a missing required tensor is INVALID_ARGUMENT naming it. Tensors sent by
// handle are resolved by `handles` as ToTensorView says. FlashAttention's
// query, key, value, dy and attention_in received as payloads are viewed
// in their received chunks; every other tensor is joined.
absl::StatusOr<core::ForwardArgs> ToForwardArgs(
    const v1::FlashAttentionScoreRequest& request,
    HandleResolver* handles = nullptr,
    wire::RequestPayloads* payloads = nullptr);
absl::StatusOr<core::BackwardArgs> ToBackwardArgs(
    const v1::FlashAttentionScoreGradRequest& request,
    HandleResolver* handles = nullptr,
    wire::RequestPayloads* payloads = nullptr);
// NSA selected attention: every tensor but atten_mask is required; an unset
// scale_value is 1.0.
absl::StatusOr<core::NsaForwardArgs> ToNsaForwardArgs(
    const v1::NsaSelectedAttentionRequest& request,
    HandleResolver* handles = nullptr,
    wire::RequestPayloads* payloads = nullptr);
absl::StatusOr<core::NsaBackwardArgs> ToNsaBackwardArgs(
    const v1::NsaSelectedAttentionGradRequest& request,
    HandleResolver* handles = nullptr,
    wire::RequestPayloads* payloads = nullptr);

// `tensor`'s dtype and shape into `out`; its bytes become `out`'s data in
// `payloads` (no copy: the encoded response is sent from the buffer), or,
// when `payloads` is null, are copied into `out`'s data.
void MoveToProto(core::HostTensor tensor, v1::Tensor* out,
                 wire::OutgoingPayloads* payloads = nullptr);

// The wire description of one planned output.
void ToProto(const core::OutputSpec& spec, v1::TensorSpec* out);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_PROTO_CONVERT_H_
