#include "server/message_bytes.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/grpc_bytes.h"

namespace attnserve::server {

absl::Status DecodeReceived(const grpc::ByteBuffer& bytes,
                            std::vector<grpc::Slice>* received,
                            wire::ReceivedBytes* view,
                            google::protobuf::Message* message,
                            wire::ReceivedPayloads* ranges) {
  const std::string& type = message->GetDescriptor()->full_name();
  if (absl::Status read = wire::ReadSlices(bytes, received, view); !read.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid ", type, ": ", read.message()));
  }
  const absl::Status status = wire::DecodeMessage(*view, message, ranges);
  if (status.ok()) return status;
  // The field the decoder stopped at stays the BadRequest's field.
  const std::optional<std::string> field = core::FieldOf(status);
  if (!field.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid ", type, ": ", status.message()));
  }
  absl::string_view rule = status.message();
  absl::ConsumePrefix(&rule, absl::StrCat(*field, ": "));
  return core::InvalidField(*field,
                            absl::StrCat(rule, " (not a valid ", type, ")"));
}

absl::Status DecodeRequest(const grpc::ByteBuffer& bytes,
                           core::BufferPool* pool,
                           std::vector<grpc::Slice>* received,
                           google::protobuf::Message* request,
                           wire::RequestPayloads* payloads) {
  wire::ReceivedBytes view;
  wire::ReceivedPayloads ranges;
  ATTN_RETURN_IF_ERROR(
      DecodeReceived(bytes, received, &view, request, &ranges));
  *payloads = wire::RequestPayloads(std::move(view), std::move(ranges), pool);
  return absl::OkStatus();
}

absl::Status ParseRequest(const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  if (bytes.Valid() && bytes.Dump(&slices).ok()) {
    flat.reserve(bytes.Length());
    for (const grpc::Slice& slice : slices) {
      flat.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    if (request->ParseFromString(flat)) return absl::OkStatus();
  }
  request->Clear();
  return absl::InvalidArgumentError(absl::StrCat(
      "not a valid ", request->GetDescriptor()->full_name(),
      " (the request's bytes are not that message's protobuf encoding)"));
}

grpc::ByteBuffer EncodeResponse(const google::protobuf::Message& response,
                                const wire::OutgoingPayloads& payloads) {
  return wire::ToByteBuffer(wire::EncodeMessage(response, payloads));
}

}  // namespace attnserve::server
