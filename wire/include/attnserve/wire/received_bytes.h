// A message's bytes as they were received: the slices of a gRPC byte buffer
// (grpc_bytes.h) read as one run, without joining them. They are the core's
// ChunkedBytes (attnserve/core/chunked_bytes.h), so that a tensor's received
// bytes can reach the kernels as they arrived (RequestPayloads::Chunks).
#ifndef ATTNSERVE_WIRE_RECEIVED_BYTES_H_
#define ATTNSERVE_WIRE_RECEIVED_BYTES_H_

#include "attnserve/core/chunked_bytes.h"

namespace attnserve::wire {

using ByteRange = core::ByteRange;
using ReceivedBytes = core::ChunkedBytes;

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_RECEIVED_BYTES_H_
