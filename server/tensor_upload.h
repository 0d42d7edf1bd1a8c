// One PutTensor stream assembled into a stored tensor, message by message,
// from the bytes gRPC received: the upload protocol's rules without the call
// around them (tensor_rpcs.h drives it; the request fuzzer feeds it bytes).
//
//   TensorUpload upload(&store, &buffers, max_tensor_elements);
//   for (each message received) ATTN_RETURN_IF_ERROR(upload.Take(bytes));
//   ATTN_ASSIGN_OR_RETURN(v1::PutTensorResponse stored, upload.Store(owner));
//
// - The first message carries the tensor's dtype and shape (and
//   ttl_seconds), held to the tensor limits; `tensor.handle` and
//   `tensor.data` must be empty (the bytes come in `chunk`).
// - The declared size is reserved in the store at once (RESOURCE_EXHAUSTED
//   saying what is free when it does not fit: nothing is buffered first),
//   and the tensor's buffer comes from `buffers`: warm memory that a deleted
//   tensor or a finished call gave back, not cleared, since every byte is
//   written once.
// - Each message is decoded by the wire codec (server/message_bytes.h) with
//   its chunk left in the received slices, and the chunk is copied from them
//   to its place in the tensor: one copy between the socket's buffers and
//   the stored tensor.
// - Bytes that are not a PutTensorRequest, chunks past the declared size, a
//   second `tensor` or `ttl_seconds`, and a stream that ends before its first
//   message or short of the declared size are INVALID_ARGUMENT naming the
//   field.
// Destroying an upload that was not stored frees what it received and its
// reservation. Thread-compatible.
#ifndef ATTNSERVE_SERVER_TENSOR_UPLOAD_H_
#define ATTNSERVE_SERVER_TENSOR_UPLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnserve/core/buffer.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/dtype.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/received_bytes.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "server/memory_budget.h"
#include "server/tensor_store.h"

namespace attnserve::server {

class TensorUpload {
 public:
  // `store` and `buffers` must outlive the upload.
  TensorUpload(TensorStore* store, core::BufferPool* buffers,
               int64_t max_tensor_elements)
      : store_(store),
        buffers_(buffers),
        max_tensor_elements_(max_tensor_elements) {}
  TensorUpload(const TensorUpload&) = delete;
  TensorUpload& operator=(const TensorUpload&) = delete;

  // Takes the stream's next message, as received. Its bytes are no longer
  // needed when this returns.
  absl::Status Take(const grpc::ByteBuffer& bytes);

  // The stream ended: stores the tensor for `owner` when all its declared
  // bytes arrived, and answers its handle, size and time to live.
  absl::StatusOr<v1::PutTensorResponse> Store(const std::string& owner);

  // For the call's log line, once the first message was taken ("" before).
  const std::string& shape_text() const { return shape_text_; }
  const std::string& dtype_name() const { return dtype_name_; }

 private:
  absl::Status First();
  absl::Status Next();
  absl::Status Append();

  TensorStore* const store_;
  core::BufferPool* const buffers_;
  const int64_t max_tensor_elements_;

  // The message being taken: its slices, a view of them, what was decoded
  // and where its payload fields lie.
  std::vector<grpc::Slice> slices_;
  wire::ReceivedBytes view_;
  v1::PutTensorRequest message_;
  wire::ReceivedPayloads ranges_;

  bool started_ = false;
  std::string shape_text_;
  std::string dtype_name_;
  core::DType dtype_ = core::DType::kFloat32;
  std::vector<int64_t> shape_;
  uint64_t size_ = 0;
  absl::Duration ttl_;
  // The tensor's bytes stored so far, in a buffer of the declared size, and
  // their share of the memory budget.
  core::Buffer bytes_;
  uint64_t stored_ = 0;
  MemoryReservation memory_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_TENSOR_UPLOAD_H_
