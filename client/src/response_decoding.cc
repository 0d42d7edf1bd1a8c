#include "response_decoding.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/grpc_bytes.h"
#include "attnserve/wire/huge_pages.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/tensor_fields.h"

namespace attnserve::client_internal {
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

void ResizeForCopy(std::string* out, size_t size) {
  if (out->capacity() < size) {
    std::string fresh;
    fresh.reserve(size);
    wire::AdviseHugePages(fresh.data(), size);
    *out = std::move(fresh);
  }
  out->resize(size);  // Fills only what grows; the copy overwrites it all.
}

absl::Status DecodeResponse(const grpc::ByteBuffer& bytes, Message* response) {
  const std::string& type = response->GetDescriptor()->full_name();
  // The tensors' strings, by field number, to receive the new bytes.
  std::map<int, std::string> kept;
  wire::ForEachTensorField(
      response, [&](const FieldDescriptor& field, v1::Tensor* tensor) {
        kept[field.number()] = std::move(*tensor->mutable_data());
      });
  response->Clear();

  std::vector<grpc::Slice> slices;
  wire::ReceivedBytes view;
  wire::ReceivedPayloads ranges;
  absl::Status status = wire::ReadSlices(bytes, &slices, &view);
  if (status.ok()) status = wire::DecodeMessage(view, response, &ranges);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat(
        "the server's response is not a valid ", type, ": ", status.message()));
  }

  std::map<const Message*, int> number_of;
  wire::ForEachTensorField(
      response, [&](const FieldDescriptor& field, v1::Tensor* tensor) {
        number_of[tensor] = field.number();
      });
  ranges.ForEach([&](const Message& holder, int number, wire::ByteRange range) {
    // DecodeMessage recorded ranges of the message it was given, which is
    // ours to change.
    Message* message = const_cast<Message*>(&holder);
    std::string* out = nullptr;
    std::string other;
    if (holder.GetDescriptor() == v1::Tensor::descriptor() &&
        number == v1::Tensor::kDataFieldNumber) {
      out = static_cast<v1::Tensor*>(message)->mutable_data();
      auto field = number_of.find(&holder);
      if (field != number_of.end()) {
        auto old = kept.find(field->second);
        if (old != kept.end()) *out = std::move(old->second);
      }
    } else {
      out = &other;
    }
    ResizeForCopy(out, range.size);
    view.CopyTo(range, out->data());
    if (out == &other) {
      message->GetReflection()->SetString(
          message, holder.GetDescriptor()->FindFieldByNumber(number),
          std::move(other));
    }
  });
  return absl::OkStatus();
}

}  // namespace attnserve::client_internal
