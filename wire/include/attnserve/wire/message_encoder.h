// Encodes protobuf messages as a sequence of pieces, so that large payloads
// are sent from where they are instead of being copied into the message and
// then again into its serialization.
//
//   OutgoingPayloads payloads;
//   payloads.Set(&response.attention_out(), v1::Tensor::kDataFieldNumber,
//                std::move(output_buffer));          // shared, not copied
//   EncodedMessage encoded = EncodeMessage(response, payloads);
//   for (const EncodedMessage::Piece& piece : encoded.pieces()) {
//     Send(piece.bytes, piece.owner);  // owner: null or the payload's buffer
//   }
//
// A singular `bytes` field takes its value from `payloads` when it has an
// entry there, otherwise from the message. Values of at least
// `min_piece_bytes` become pieces of their own that point at the payload's
// buffer (owner set) or at the message's own string (owner null: the
// message must outlive the pieces); everything else is encoded into bytes
// the EncodedMessage holds. The concatenated pieces are the protobuf
// serialization of the message with the payloads in their fields: fields in
// number order, packed repeated scalars, as protobuf writes them (map
// entries in reflection order, which any parser accepts).
// Pure; thread-compatible.
#ifndef ATTNSERVE_WIRE_MESSAGE_ENCODER_H_
#define ATTNSERVE_WIRE_MESSAGE_ENCODER_H_

#include <cstddef>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "attnserve/core/buffer.h"
#include "google/protobuf/message.h"

namespace attnserve::wire {

// Payloads of singular `bytes` fields, by the (sub)message holding the field.
class OutgoingPayloads {
 public:
  void Set(const google::protobuf::Message* message, int field,
           core::Buffer bytes) {
    buffers_[{message, field}] = std::move(bytes);
  }
  const core::Buffer* Find(const google::protobuf::Message& message,
                           int field) const {
    auto it = buffers_.find({&message, field});
    return it == buffers_.end() ? nullptr : &it->second;
  }
  size_t size() const { return buffers_.size(); }

 private:
  std::map<std::pair<const google::protobuf::Message*, int>, core::Buffer>
      buffers_;
};

struct EncodeOptions;

class EncodedMessage {
 public:
  struct Piece {
    absl::string_view bytes;
    // The payload buffer `bytes` lies in (its owner: share it to keep the
    // bytes alive), or null for bytes held here or borrowed from the message.
    const core::Buffer* owner = nullptr;
  };

  EncodedMessage() = default;
  EncodedMessage(EncodedMessage&&) = default;
  EncodedMessage& operator=(EncodedMessage&&) = default;

  const std::vector<Piece>& pieces() const { return pieces_; }
  // Total bytes.
  size_t size() const { return size_; }
  // The bytes in one string (a copy; for tests and small messages).
  std::string Flatten() const;

 private:
  friend class Encoder;
  friend EncodedMessage EncodeMessage(const google::protobuf::Message& message,
                                      const OutgoingPayloads& payloads,
                                      const EncodeOptions& options);

  std::vector<Piece> pieces_;
  // Bytes encoded here; a deque, so that pieces' views stay valid.
  std::deque<std::string> held_;
  size_t size_ = 0;
};

struct EncodeOptions {
  // `bytes` values at least this long are pieces of their own.
  size_t min_piece_bytes = size_t{64} << 10;
};

// `payloads` (its buffers) must outlive the pieces that point into it.
EncodedMessage EncodeMessage(const google::protobuf::Message& message,
                             const OutgoingPayloads& payloads,
                             const EncodeOptions& options = {});

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_MESSAGE_ENCODER_H_
