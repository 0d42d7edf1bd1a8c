#include "attnserve/wire/message_decoder.h"

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::wire {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Protobuf wire types.
enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLength = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

constexpr uint64_t kMaxFieldNumber = (uint64_t{1} << 29) - 1;

// Sequential reads over ReceivedBytes, each bounded by an end offset.
class Cursor {
 public:
  explicit Cursor(const ReceivedBytes& bytes) : bytes_(bytes) {}

  size_t pos() const { return pos_; }

  void Seek(size_t pos) {
    pos_ = pos;
    if (pos >= bytes_.size()) {
      chunk_ = bytes_.chunks().size();
      at_ = 0;
      return;
    }
    chunk_ = bytes_.ChunkOf(pos);
    at_ = pos - bytes_.ChunkStart(chunk_);
  }

  // Advances by `n` bytes (n <= end - pos, checked by the caller).
  void Skip(size_t n) {
    const auto& chunks = bytes_.chunks();
    pos_ += n;
    while (n > 0 && chunk_ < chunks.size()) {
      const size_t in_chunk = chunks[chunk_].size() - at_;
      if (n < in_chunk) {
        at_ += n;
        return;
      }
      n -= in_chunk;
      ++chunk_;
      at_ = 0;
    }
  }

  // One byte before `end`; false at `end`.
  bool ReadByte(size_t end, uint8_t* out) {
    if (pos_ >= end) return false;
    const auto& chunks = bytes_.chunks();
    while (at_ >= chunks[chunk_].size()) {
      ++chunk_;
      at_ = 0;
    }
    *out = static_cast<uint8_t>(chunks[chunk_][at_]);
    ++at_;
    ++pos_;
    return true;
  }

  // A varint of at most 10 bytes before `end`; false when truncated or
  // longer.
  bool ReadVarint(size_t end, uint64_t* out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      uint8_t byte = 0;
      if (!ReadByte(end, &byte)) return false;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *out = value;
        return true;
      }
    }
    return false;
  }

 private:
  const ReceivedBytes& bytes_;
  size_t pos_ = 0;
  size_t chunk_ = 0;
  size_t at_ = 0;
};

class Decoder {
 public:
  Decoder(const ReceivedBytes& bytes, ReceivedPayloads* payloads,
          const DecodeLimits& limits)
      : bytes_(bytes), cursor_(bytes), payloads_(payloads), limits_(limits) {}

  absl::Status Decode(Message* message, size_t begin, size_t end, int depth,
                      const std::string& path);

 private:
  // The elements a repeated scalar field's value holds: 1 unpacked, or the
  // count in a packed run [begin, end).
  absl::StatusOr<int64_t> PackedCount(const FieldDescriptor* field,
                                      size_t begin, size_t end,
                                      const std::string& path);

  const ReceivedBytes& bytes_;
  Cursor cursor_;
  ReceivedPayloads* payloads_;
  const DecodeLimits& limits_;
};

std::string Join(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

absl::Status Malformed(const std::string& path, absl::string_view what) {
  if (path.empty()) return absl::InvalidArgumentError(what);
  return core::InvalidField(path, what);
}

bool WireTypeFits(const FieldDescriptor* field, uint32_t wire_type) {
  if (field->is_packable() && wire_type == kLength) return true;
  switch (field->type()) {
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      return wire_type == kFixed64;
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      return wire_type == kFixed32;
    case FieldDescriptor::TYPE_STRING:
    case FieldDescriptor::TYPE_BYTES:
    case FieldDescriptor::TYPE_MESSAGE:
      return wire_type == kLength;
    case FieldDescriptor::TYPE_GROUP:
      return false;
    default:
      return wire_type == kVarint;
  }
}

absl::StatusOr<int64_t> Decoder::PackedCount(const FieldDescriptor* field,
                                             size_t begin, size_t end,
                                             const std::string& path) {
  const size_t len = end - begin;
  switch (field->type()) {
    case FieldDescriptor::TYPE_DOUBLE:
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
      if (len % 8 != 0) return Malformed(path, "packed run is not whole");
      return static_cast<int64_t>(len / 8);
    case FieldDescriptor::TYPE_FLOAT:
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
      if (len % 4 != 0) return Malformed(path, "packed run is not whole");
      return static_cast<int64_t>(len / 4);
    default: {
      // Varints: one per byte with the continuation bit clear.
      int64_t count = 0;
      cursor_.Seek(begin);
      uint64_t value = 0;
      while (cursor_.pos() < end) {
        if (!cursor_.ReadVarint(end, &value)) {
          return Malformed(path, "truncated varint in a packed run");
        }
        ++count;
      }
      return count;
    }
  }
}

absl::Status Decoder::Decode(Message* message, size_t begin, size_t end,
                             int depth, const std::string& path) {
  const Descriptor* descriptor = message->GetDescriptor();
  const Reflection* reflection = message->GetReflection();
  const bool is_tensor = descriptor == v1::Tensor::descriptor();
  // Scalar and string fields, copied as they came; protobuf parses them.
  std::string rest;
  std::map<int, int64_t> repeated_counts;
  auto flush = [&]() -> absl::Status {
    if (rest.empty()) return absl::OkStatus();
    const bool ok = message->MergeFromString(rest);
    rest.clear();
    if (!ok) {
      return Malformed(path,
                       absl::StrCat("not a valid ", descriptor->full_name(),
                                    " (a value or a string is malformed)"));
    }
    return absl::OkStatus();
  };

  cursor_.Seek(begin);
  while (cursor_.pos() < end) {
    const size_t field_start = cursor_.pos();
    uint64_t tag = 0;
    if (!cursor_.ReadVarint(end, &tag)) {
      return Malformed(
          path, absl::StrCat("truncated field tag at byte ", field_start));
    }
    const uint64_t number = tag >> 3;
    const uint32_t wire_type = static_cast<uint32_t>(tag & 7);
    if (number == 0 || number > kMaxFieldNumber) {
      return Malformed(path, absl::StrCat("invalid field number ", number,
                                          " at byte ", field_start));
    }
    const FieldDescriptor* field =
        descriptor->FindFieldByNumber(static_cast<int>(number));
    const std::string field_path =
        field == nullptr ? path : Join(path, field->name());
    size_t value_begin = cursor_.pos();
    switch (wire_type) {
      case kVarint: {
        uint64_t value = 0;
        if (!cursor_.ReadVarint(end, &value)) {
          return Malformed(field_path, "truncated varint");
        }
        break;
      }
      case kFixed64:
      case kFixed32: {
        const size_t n = wire_type == kFixed64 ? 8 : 4;
        if (end - cursor_.pos() < n) {
          return Malformed(field_path, "truncated fixed-size value");
        }
        cursor_.Skip(n);
        break;
      }
      case kLength: {
        uint64_t len = 0;
        if (!cursor_.ReadVarint(end, &len)) {
          return Malformed(field_path, "truncated length");
        }
        if (len > end - cursor_.pos()) {
          return Malformed(field_path,
                           absl::StrCat("length ", len,
                                        " runs past the end of the message (",
                                        end - cursor_.pos(), " bytes left)"));
        }
        value_begin = cursor_.pos();
        cursor_.Skip(static_cast<size_t>(len));
        break;
      }
      case kStartGroup:
      case kEndGroup:
        return Malformed(field_path, "groups are not part of proto3");
      default:
        return Malformed(field_path,
                         absl::StrCat("invalid wire type ", wire_type));
    }
    const size_t value_end = cursor_.pos();
    // Unknown fields, and known ones sent with another wire type (which
    // protobuf keeps as unknown), are dropped.
    if (field == nullptr || !WireTypeFits(field, wire_type)) continue;
    if (field->real_containing_oneof() != nullptr) {
      ATTN_RETURN_IF_ERROR(flush());  // Keeps the oneof's last member last.
    }

    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (depth + 1 > limits_.max_depth) {
        return Malformed(field_path, absl::StrCat("messages nested more than ",
                                                  limits_.max_depth, " deep"));
      }
      Message* sub = nullptr;
      std::string sub_path = field_path;
      if (field->is_repeated()) {
        const int64_t count = ++repeated_counts[field->number()];
        if (count > limits_.max_repeated) {
          return Malformed(
              field_path,
              absl::StrCat("more than ", limits_.max_repeated, " elements"));
        }
        sub_path = absl::StrCat(field_path, "[", count - 1, "]");
        sub = reflection->AddMessage(message, field);
      } else {
        sub = reflection->MutableMessage(message, field);
      }
      ATTN_RETURN_IF_ERROR(
          Decode(sub, value_begin, value_end, depth + 1, sub_path));
      cursor_.Seek(value_end);
      continue;
    }
    if (field->type() == FieldDescriptor::TYPE_BYTES && !field->is_repeated()) {
      payloads_->Set(message, field->number(),
                     ByteRange{value_begin, value_end - value_begin});
      continue;
    }
    if (field->is_repeated()) {
      int64_t n = 1;
      if (wire_type == kLength) {
        if (field->type() == FieldDescriptor::TYPE_STRING ||
            field->type() == FieldDescriptor::TYPE_BYTES) {
          if (value_end - value_begin > limits_.max_string_bytes) {
            return Malformed(field_path,
                             absl::StrCat("longer than ",
                                          limits_.max_string_bytes, " bytes"));
          }
        } else {
          ATTN_ASSIGN_OR_RETURN(
              n, PackedCount(field, value_begin, value_end, field_path));
          cursor_.Seek(value_end);
        }
      }
      int64_t& count = repeated_counts[field->number()];
      count += n;
      const bool is_shape =
          is_tensor && field->number() == v1::Tensor::kShapeFieldNumber;
      const int64_t limit = is_shape ? limits_.max_rank : limits_.max_repeated;
      if (count > limit) {
        return Malformed(field_path,
                         is_shape
                             ? absl::StrCat("more than ", limit, " dimensions")
                             : absl::StrCat("more than ", limit, " elements"));
      }
    } else if (wire_type == kLength &&
               value_end - value_begin > limits_.max_string_bytes) {
      return Malformed(
          field_path,
          absl::StrCat("longer than ", limits_.max_string_bytes, " bytes"));
    }
    const size_t old = rest.size();
    rest.resize(old + (value_end - field_start));
    bytes_.CopyTo(ByteRange{field_start, value_end - field_start},
                  rest.data() + old);
    if (field->real_containing_oneof() != nullptr) {
      ATTN_RETURN_IF_ERROR(flush());
    }
  }
  return flush();
}

}  // namespace

absl::Status DecodeMessage(const ReceivedBytes& bytes,
                           google::protobuf::Message* message,
                           ReceivedPayloads* payloads,
                           const DecodeLimits& limits) {
  Decoder decoder(bytes, payloads, limits);
  return decoder.Decode(message, 0, bytes.size(), 0, "");
}

}  // namespace attnserve::wire
