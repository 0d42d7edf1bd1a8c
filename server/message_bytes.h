// Messages to and from the bytes gRPC hands the service (grpc::ByteBuffer),
// for every RPC the service takes on bytes: the compute RPCs and the
// resident tensors' streams through the wire codec (payload fields left in
// the received slices, sent from the buffers that hold them), the small
// RPCs through protobuf. Bytes that are not the expected message are
// INVALID_ARGUMENT naming its type, so that a caller is told, and the call
// logged, like any other refusal.
//
//   std::vector<grpc::Slice> received;
//   wire::ReceivedBytes view;
//   wire::ReceivedPayloads ranges;
//   v1::PutTensorRequest message;
//   ATTN_RETURN_IF_ERROR(
//       DecodeReceived(bytes, &received, &view, &message, &ranges));
//
// Pure functions; thread-safe.
#ifndef ATTNSERVE_SERVER_MESSAGE_BYTES_H_
#define ATTNSERVE_SERVER_MESSAGE_BYTES_H_

#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/received_bytes.h"
#include "attnserve/wire/request_payloads.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace attnserve::server {

// Decodes `bytes` into `message` (wire::DecodeMessage: payload fields stay
// where they were received), keeping the received slices in `received`,
// read through `view`, and where each payload field lies in `ranges`.
// INVALID_ARGUMENT "not a valid <message type>: ..." (with the field, when
// one is to blame) for bytes that are not one.
absl::Status DecodeReceived(const grpc::ByteBuffer& bytes,
                            std::vector<grpc::Slice>* received,
                            wire::ReceivedBytes* view,
                            google::protobuf::Message* message,
                            wire::ReceivedPayloads* ranges);

// Decodes `bytes` into `request` (DecodeReceived), making `payloads` copy
// from the received slices into `pool`.
absl::Status DecodeRequest(const grpc::ByteBuffer& bytes,
                           core::BufferPool* pool,
                           std::vector<grpc::Slice>* received,
                           google::protobuf::Message* request,
                           wire::RequestPayloads* payloads);

// Parses `bytes` (a small message) into `request` with protobuf;
// INVALID_ARGUMENT "not a valid <message type>" when they are not one.
absl::Status ParseRequest(const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request);

// `response` with `payloads` in their fields, as slices: the payloads' point
// at their buffers (which they keep alive), the rest is copied.
grpc::ByteBuffer EncodeResponse(const google::protobuf::Message& response,
                                const wire::OutgoingPayloads& payloads);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_MESSAGE_BYTES_H_
