// The payloads of a decoded request (message_decoder.h): each either read
// in place, as the chunks it was received in (for the tensors the kernels
// read row by row, which then take no copy between the socket's buffers and
// the kernel), or copied on first use from the received bytes into one
// contiguous buffer from a pool, memory that is already warm.
//
//   RequestPayloads payloads(std::move(bytes), std::move(ranges), &pool);
//   std::optional<size_t> n = payloads.SizeOf(request.query(), kData);
//   ... check n against the shape ...
//   const core::Buffer* q = payloads.Get(request.query(), kData);
//   core::Buffer kept = q->Share();      // e.g. kept after the call
//   const core::ChunkedBytes* k = payloads.Chunks(request.key(), kData);
//   payloads.ReleaseReceived();          // the received bytes may go now
//
// The received bytes (ReceivedBytes' chunks) must stay alive until
// ReleaseReceived() or the end of the object; the buffers Get() returns live
// as long as the object (or longer, when shared). Not thread-safe.
#ifndef ATTNSERVE_WIRE_REQUEST_PAYLOADS_H_
#define ATTNSERVE_WIRE_REQUEST_PAYLOADS_H_

#include <cstddef>
#include <map>
#include <optional>
#include <utility>

#include "attnserve/core/buffer.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/received_bytes.h"
#include "google/protobuf/message.h"

namespace attnserve::wire {

class RequestPayloads {
 public:
  // No payloads: every field holds its own bytes.
  RequestPayloads() = default;
  // `pool` (null: the heap) must outlive the object.
  RequestPayloads(ReceivedBytes bytes, ReceivedPayloads ranges,
                  core::BufferPool* pool)
      : bytes_(std::move(bytes)), ranges_(std::move(ranges)), pool_(pool) {}

  RequestPayloads(RequestPayloads&&) = default;
  RequestPayloads& operator=(RequestPayloads&&) = default;

  // The size of `message`'s field `field` when it was received as a
  // payload; nullopt when the message holds the field's bytes itself.
  std::optional<size_t> SizeOf(const google::protobuf::Message& message,
                               int field) const;

  // The field's bytes, copied into a buffer on the first call; null when it
  // was not received as a payload, or when the received bytes were released
  // before it was copied.
  const core::Buffer* Get(const google::protobuf::Message& message, int field);

  // The field's bytes as they were received, not copied (for the tensors
  // the kernels read in place: core::TensorView::chunks); null when it was
  // not received as a payload or the received bytes were released. Valid
  // while the object and its received bytes are.
  const core::ChunkedBytes* Chunks(const google::protobuf::Message& message,
                                   int field);

  // Forgets the received bytes; payloads already copied stay, chunks go.
  void ReleaseReceived() {
    bytes_ = ReceivedBytes();
    chunks_.clear();
  }

  // Bytes copied so far.
  size_t copied_bytes() const { return copied_bytes_; }

 private:
  // The field's range in the received bytes; null when it was not received
  // as a payload or the received bytes no longer hold it.
  const ByteRange* Received(const google::protobuf::Message& message,
                            int field) const;

  ReceivedBytes bytes_;
  ReceivedPayloads ranges_;
  core::BufferPool* pool_ = nullptr;
  std::map<std::pair<const google::protobuf::Message*, int>, core::Buffer>
      copies_;
  std::map<std::pair<const google::protobuf::Message*, int>, core::ChunkedBytes>
      chunks_;
  size_t copied_bytes_ = 0;
};

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_REQUEST_PAYLOADS_H_
