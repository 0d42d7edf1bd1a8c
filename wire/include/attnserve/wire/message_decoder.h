// Decodes protobuf messages from received bytes without copying their
// payloads.
//
// A request carries its tensors' bytes inline (Tensor.data), up to a
// gigabyte. DecodeMessage parses everything else into the message, and
// leaves every singular `bytes` field where it lies: the message's field
// stays empty and `payloads` records the field's range in the received
// bytes, so that the bytes can be copied once, into memory of the reader's
// choosing, after the request has been checked.
//
//   ReceivedBytes bytes(chunks);
//   v1::FlashAttentionScoreRequest request;
//   ReceivedPayloads payloads;
//   ATTN_RETURN_IF_ERROR(DecodeMessage(bytes, &request, &payloads));
//   const ByteRange* q =
//       payloads.Find(request.query(), v1::Tensor::kDataFieldNumber);
//
// Apart from the payloads, the message equals protobuf's own parse of the
// same bytes, except that unknown fields are dropped. Hostile bytes are
// bounded before anything is copied: nesting depth, the number of elements
// of every repeated field (Tensor.shape: the rank), and the length of string
// fields. Errors are INVALID_ARGUMENT with the path of the field where
// decoding stopped attached (core::FieldOf), e.g. "query.shape: more than 32
// dimensions" or "key: length 1000 runs past the end of the message".
// Never crashes on any input; pure and thread-safe.
#ifndef ATTNSERVE_WIRE_MESSAGE_DECODER_H_
#define ATTNSERVE_WIRE_MESSAGE_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "attnserve/wire/received_bytes.h"
#include "google/protobuf/message.h"

namespace attnserve::wire {

struct DecodeLimits {
  // Most dimensions of a Tensor.shape.
  int max_rank = 32;
  // Most elements of any other repeated field (e.g. actual_seq_qlen).
  int64_t max_repeated = int64_t{1} << 16;
  // Most bytes of one string field (e.g. input_layout, handle).
  size_t max_string_bytes = 4096;
  // Most levels of nested messages below the top one.
  int max_depth = 8;
};

// Where the payload (singular `bytes`) fields of a decoded message lie in the
// received bytes. Keys are the addresses of the (sub)messages holding them,
// valid while the decoded message lives.
class ReceivedPayloads {
 public:
  // Records (replacing) the range of `message`'s field number `field`.
  void Set(const google::protobuf::Message* message, int field,
           ByteRange range) {
    ranges_[{message, field}] = range;
  }
  // The range of `message`'s field `field`, or null when it was not received.
  const ByteRange* Find(const google::protobuf::Message& message,
                        int field) const {
    auto it = ranges_.find({&message, field});
    return it == ranges_.end() ? nullptr : &it->second;
  }
  size_t size() const { return ranges_.size(); }
  // Calls f(message, field, range) for every recorded range.
  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& [key, range] : ranges_) f(*key.first, key.second, range);
  }

 private:
  std::map<std::pair<const google::protobuf::Message*, int>, ByteRange> ranges_;
};

// Decodes `bytes` into `message` (merging into what it holds, like
// protobuf's MergeFrom), recording payload ranges in `payloads`.
absl::Status DecodeMessage(const ReceivedBytes& bytes,
                           google::protobuf::Message* message,
                           ReceivedPayloads* payloads,
                           const DecodeLimits& limits = {});

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_MESSAGE_DECODER_H_
