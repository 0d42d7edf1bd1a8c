// Between the wire codec and gRPC's byte buffers, for the server and the
// client alike.
//
// Sending: an EncodedMessage (message_encoder.h) becomes a grpc::ByteBuffer
// without copying its large pieces. A payload piece holds a reference to its
// buffer. A large piece borrowed from the message itself (owner null: a
// `bytes` field the message holds) is lent when a SliceLoans is given: the
// slice points at the message's bytes, and SliceLoans::Wait() returns once
// gRPC has let go of every such slice, after which the message may change or
// go. Without a SliceLoans, and for all small pieces, the bytes are copied.
//
//   wire::EncodedMessage encoded = wire::EncodeMessage(request, {});
//   wire::SliceLoans loans;
//   {
//     grpc::ByteBuffer sent = wire::ToByteBuffer(encoded, &loans);
//     ... the call, until it completes ...
//   }
//   loans.Wait();   // now `request` and `encoded` may go
//
// Receiving: the slices of a received byte buffer, with a ReceivedBytes that
// reads them as one run of bytes (message_decoder.h decodes from it).
#ifndef ATTNSERVE_WIRE_GRPC_BYTES_H_
#define ATTNSERVE_WIRE_GRPC_BYTES_H_

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "attnserve/core/buffer.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/received_bytes.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace attnserve::wire {

// Counts the slices lent out of a message's own memory. Thread-safe.
class SliceLoans {
 public:
  SliceLoans() = default;
  SliceLoans(const SliceLoans&) = delete;
  SliceLoans& operator=(const SliceLoans&) = delete;
  // Waits: the lent memory must not go while gRPC may still read it.
  ~SliceLoans() { Wait(); }

  // Blocks until every slice lent so far was released.
  void Wait();
  // Slices lent and not yet released.
  int outstanding() const;

 private:
  friend grpc::ByteBuffer ToByteBuffer(const EncodedMessage& encoded,
                                       SliceLoans* loans);
  friend grpc::ByteBuffer WithLentBytesField(absl::string_view head,
                                             int field_number,
                                             absl::string_view value,
                                             SliceLoans* loans);
  grpc::Slice Lend(absl::string_view bytes);
  static void Release(void* loans);

  mutable std::mutex mu_;
  std::condition_variable released_;
  int outstanding_ = 0;
};

// The pieces of `encoded` as one byte buffer: payload pieces by reference,
// borrowed pieces of at least kMinLentBytes lent through `loans` (copied when
// `loans` is null), everything else copied into slices of its own. The
// buffers behind payload pieces stay alive while the byte buffer (or a copy
// of it) refers to them.
inline constexpr size_t kMinLentBytes = size_t{64} << 10;
grpc::ByteBuffer ToByteBuffer(const EncodedMessage& encoded,
                              SliceLoans* loans = nullptr);

// The encoding of a message whose other fields are encoded in `head`,
// followed by its `bytes` field `field_number` holding `value` (protobuf
// accepts fields in any order): `head` and the field's tag and length
// copied, `value` lent through `loans` when it is at least kMinLentBytes
// long (copied otherwise). E.g. one chunk of a streamed upload, sent from
// where the caller's tensor lies.
grpc::ByteBuffer WithLentBytesField(absl::string_view head, int field_number,
                                    absl::string_view value, SliceLoans* loans);

// The same with `value` lying within `owner`'s bytes: when it is at least
// kMinLentBytes long its slice holds a reference to `owner`'s block, which
// stays alive while gRPC holds the slice; nothing waits. E.g. one chunk of a
// download, sent from the stored tensor.
grpc::ByteBuffer WithSharedBytesField(absl::string_view head, int field_number,
                                      absl::string_view value,
                                      const core::Buffer& owner);

// The slices of `bytes` (referenced, not copied) and a view of them. An
// invalid or unreadable byte buffer is INVALID_ARGUMENT.
absl::Status ReadSlices(const grpc::ByteBuffer& bytes,
                        std::vector<grpc::Slice>* slices, ReceivedBytes* view);

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_GRPC_BYTES_H_
