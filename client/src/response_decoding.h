// Decodes a compute response from the bytes gRPC received, reusing the
// memory the response object's tensors already hold.
//
// Protobuf's own parse clears a message by deleting its sub-messages, so
// every call would receive its tensors into freshly allocated memory (on a
// virtual machine, page faults make that several times slower than a warm
// copy). Here the `data` strings of the response's tensor fields are kept
// across the clear and receive the new bytes, so a caller that reuses one
// response object for a series of calls copies each tensor once, into warm
// memory. Fresh strings of at least 4 MiB are advised into huge pages.
#ifndef ATTNSERVE_CLIENT_SRC_RESPONSE_DECODING_H_
#define ATTNSERVE_CLIENT_SRC_RESPONSE_DECODING_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace attnserve::client_internal {

// Replaces `response` by the message in `bytes`. INTERNAL naming the type
// when the bytes are not a valid encoding of it; `response` is then
// unspecified.
absl::Status DecodeResponse(const grpc::ByteBuffer& bytes,
                            google::protobuf::Message* response);

// Makes `out` `size` bytes long to receive a tensor's bytes, keeping its
// memory when it has enough (what it holds is then overwritten); new memory
// is advised into huge pages before it is first touched.
void ResizeForCopy(std::string* out, size_t size);

}  // namespace attnserve::client_internal

#endif  // ATTNSERVE_CLIENT_SRC_RESPONSE_DECODING_H_
