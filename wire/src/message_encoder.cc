#include "attnserve/wire/message_encoder.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace attnserve::wire {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

namespace {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLength = 2,
  kFixed32 = 5,
};

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void AppendTag(int number, uint32_t wire_type, std::string* out) {
  AppendVarint((static_cast<uint64_t>(number) << 3) | wire_type, out);
}

template <typename T>
void AppendFixed(T value, std::string* out) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // Little-endian hosts only.
  out->append(bytes, sizeof(T));
}

uint32_t WireTypeOf(const FieldDescriptor* field) {
  switch (field->type()) {
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      return kFixed64;
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      return kFixed32;
    case FieldDescriptor::TYPE_STRING:
    case FieldDescriptor::TYPE_BYTES:
    case FieldDescriptor::TYPE_MESSAGE:
      return kLength;
    default:
      return kVarint;
  }
}

// Element `index` of a scalar field (-1: the singular value), encoded.
void AppendScalar(const Message& message, const FieldDescriptor* field,
                  int index, std::string* out) {
  const Reflection* r = message.GetReflection();
  const bool rep = index >= 0;
  switch (field->type()) {
    case FieldDescriptor::TYPE_INT32:
      AppendVarint(static_cast<uint64_t>(static_cast<int64_t>(
                       rep ? r->GetRepeatedInt32(message, field, index)
                           : r->GetInt32(message, field))),
                   out);
      break;
    case FieldDescriptor::TYPE_ENUM:
      AppendVarint(static_cast<uint64_t>(static_cast<int64_t>(
                       rep ? r->GetRepeatedEnumValue(message, field, index)
                           : r->GetEnumValue(message, field))),
                   out);
      break;
    case FieldDescriptor::TYPE_INT64:
      AppendVarint(
          static_cast<uint64_t>(rep ? r->GetRepeatedInt64(message, field, index)
                                    : r->GetInt64(message, field)),
          out);
      break;
    case FieldDescriptor::TYPE_UINT32:
      AppendVarint(rep ? r->GetRepeatedUInt32(message, field, index)
                       : r->GetUInt32(message, field),
                   out);
      break;
    case FieldDescriptor::TYPE_UINT64:
      AppendVarint(rep ? r->GetRepeatedUInt64(message, field, index)
                       : r->GetUInt64(message, field),
                   out);
      break;
    case FieldDescriptor::TYPE_BOOL:
      AppendVarint((rep ? r->GetRepeatedBool(message, field, index)
                        : r->GetBool(message, field))
                       ? 1
                       : 0,
                   out);
      break;
    case FieldDescriptor::TYPE_SINT32: {
      const int32_t v = rep ? r->GetRepeatedInt32(message, field, index)
                            : r->GetInt32(message, field);
      AppendVarint(
          (static_cast<uint32_t>(v) << 1) ^ static_cast<uint32_t>(v >> 31),
          out);
      break;
    }
    case FieldDescriptor::TYPE_SINT64: {
      const int64_t v = rep ? r->GetRepeatedInt64(message, field, index)
                            : r->GetInt64(message, field);
      AppendVarint(
          (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63),
          out);
      break;
    }
    case FieldDescriptor::TYPE_FIXED32:
      AppendFixed<uint32_t>(rep ? r->GetRepeatedUInt32(message, field, index)
                                : r->GetUInt32(message, field),
                            out);
      break;
    case FieldDescriptor::TYPE_SFIXED32:
      AppendFixed<int32_t>(rep ? r->GetRepeatedInt32(message, field, index)
                               : r->GetInt32(message, field),
                           out);
      break;
    case FieldDescriptor::TYPE_FLOAT:
      AppendFixed<float>(rep ? r->GetRepeatedFloat(message, field, index)
                             : r->GetFloat(message, field),
                         out);
      break;
    case FieldDescriptor::TYPE_FIXED64:
      AppendFixed<uint64_t>(rep ? r->GetRepeatedUInt64(message, field, index)
                                : r->GetUInt64(message, field),
                            out);
      break;
    case FieldDescriptor::TYPE_SFIXED64:
      AppendFixed<int64_t>(rep ? r->GetRepeatedInt64(message, field, index)
                               : r->GetInt64(message, field),
                           out);
      break;
    case FieldDescriptor::TYPE_DOUBLE:
      AppendFixed<double>(rep ? r->GetRepeatedDouble(message, field, index)
                              : r->GetDouble(message, field),
                          out);
      break;
    default:
      break;  // Strings, bytes and messages are not scalars.
  }
}

}  // namespace

// Builds the pieces of one message level; nested messages are encoded into
// their own Encoder first, for their length.
class Encoder {
 public:
  // Bytes encoded here go to `held`, which every encoder of one message
  // shares (its strings never move, so pieces may point into them).
  Encoder(const OutgoingPayloads& payloads, const EncodeOptions& options,
          std::deque<std::string>* held)
      : payloads_(payloads), options_(options), held_(held) {}

  void EncodeFields(const Message& message);

  // Moves the pieces into `out`.
  void MoveInto(EncodedMessage* out) {
    Flush();
    out->pieces_ = std::move(pieces_);
    out->size_ = size_;
  }

 private:
  std::string* bytes() { return &current_; }

  // Ends the bytes held so far as a piece.
  void Flush() {
    if (current_.empty()) return;
    held_->push_back(std::move(current_));
    current_.clear();
    pieces_.push_back(EncodedMessage::Piece{held_->back(), nullptr});
  }

  // A value of its own: `bytes`, owned by `owner` or borrowed.
  void AppendSeparate(absl::string_view value, const core::Buffer* owner) {
    Flush();
    pieces_.push_back(EncodedMessage::Piece{value, owner});
    size_ += value.size();
  }

  void AppendHeld(absl::string_view value) {
    current_.append(value.data(), value.size());
    size_ += value.size();
  }

  // Appends a length-delimited value (tag and length already written).
  void AppendBytesValue(absl::string_view value, const core::Buffer* owner) {
    if (value.size() >= options_.min_piece_bytes) {
      AppendSeparate(value, owner);
    } else {
      AppendHeld(value);
    }
  }

  void AppendHeader(int number, uint32_t wire_type, uint64_t length,
                    bool with_length) {
    std::string header;
    AppendTag(number, wire_type, &header);
    if (with_length) AppendVarint(length, &header);
    AppendHeld(header);
  }

  void AppendMessage(int number, const Message& message) {
    Encoder child(payloads_, options_, held_);
    child.EncodeFields(message);
    child.Flush();
    AppendHeader(number, kLength, child.size_, true);
    Flush();
    pieces_.insert(pieces_.end(), child.pieces_.begin(), child.pieces_.end());
    size_ += child.size_;
  }

  void EncodeField(const Message& message, const FieldDescriptor* field);

  const OutgoingPayloads& payloads_;
  const EncodeOptions& options_;
  std::deque<std::string>* const held_;
  std::vector<EncodedMessage::Piece> pieces_;
  std::string current_;
  size_t size_ = 0;
};

void Encoder::EncodeField(const Message& message,
                          const FieldDescriptor* field) {
  const Reflection* r = message.GetReflection();
  const int number = field->number();
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    if (field->is_repeated()) {
      const int n = r->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        AppendMessage(number, r->GetRepeatedMessage(message, field, i));
      }
    } else {
      AppendMessage(number, r->GetMessage(message, field));
    }
    return;
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    std::string scratch;
    if (field->is_repeated()) {
      const int n = r->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        const std::string& value =
            r->GetRepeatedStringReference(message, field, i, &scratch);
        AppendHeader(number, kLength, value.size(), true);
        AppendHeld(value);
      }
      return;
    }
    if (const core::Buffer* payload = payloads_.Find(message, number)) {
      AppendHeader(number, kLength, payload->size(), true);
      AppendBytesValue(payload->view(), payload);
      return;
    }
    const std::string& value = r->GetStringReference(message, field, &scratch);
    AppendHeader(number, kLength, value.size(), true);
    if (&value == &scratch) {
      AppendHeld(value);  // Not the message's own string: copy it.
    } else {
      AppendBytesValue(value, nullptr);
    }
    return;
  }
  if (field->is_repeated()) {
    const int n = r->FieldSize(message, field);
    if (field->is_packed()) {
      std::string values;
      for (int i = 0; i < n; ++i) AppendScalar(message, field, i, &values);
      AppendHeader(number, kLength, values.size(), true);
      AppendHeld(values);
    } else {
      for (int i = 0; i < n; ++i) {
        std::string value;
        AppendTag(number, WireTypeOf(field), &value);
        AppendScalar(message, field, i, &value);
        AppendHeld(value);
      }
    }
    return;
  }
  std::string value;
  AppendTag(number, WireTypeOf(field), &value);
  AppendScalar(message, field, -1, &value);
  AppendHeld(value);
}

void Encoder::EncodeFields(const Message& message) {
  std::vector<const FieldDescriptor*> fields;
  // Set fields (proto3: non-default), in field number order. A payload field
  // with an empty value in the message is listed by the payload table.
  message.GetReflection()->ListFields(message, &fields);
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->type() != FieldDescriptor::TYPE_BYTES || field->is_repeated() ||
        payloads_.Find(message, field->number()) == nullptr) {
      continue;
    }
    if (std::find(fields.begin(), fields.end(), field) == fields.end()) {
      fields.push_back(field);
    }
  }
  std::sort(fields.begin(), fields.end(),
            [](const FieldDescriptor* a, const FieldDescriptor* b) {
              return a->number() < b->number();
            });
  for (const FieldDescriptor* field : fields) EncodeField(message, field);
}

std::string EncodedMessage::Flatten() const {
  std::string out;
  out.reserve(size_);
  for (const Piece& piece : pieces_) {
    out.append(piece.bytes.data(), piece.bytes.size());
  }
  return out;
}

EncodedMessage EncodeMessage(const Message& message,
                             const OutgoingPayloads& payloads,
                             const EncodeOptions& options) {
  EncodedMessage out;
  Encoder encoder(payloads, options, &out.held_);
  encoder.EncodeFields(message);
  encoder.MoveInto(&out);
  return out;
}

}  // namespace attnserve::wire
