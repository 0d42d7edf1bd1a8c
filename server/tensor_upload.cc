#include "server/tensor_upload.h"

#include <memory>
#include <new>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/tensor.h"
#include "server/message_bytes.h"
#include "server/request_limits.h"

namespace attnserve::server {

absl::Status TensorUpload::Take(const grpc::ByteBuffer& bytes) {
  message_.Clear();
  ranges_ = wire::ReceivedPayloads();
  absl::Status status =
      DecodeReceived(bytes, &slices_, &view_, &message_, &ranges_);
  if (status.ok()) status = started_ ? Next() : First();
  // The message's slices go back to gRPC.
  view_ = wire::ReceivedBytes();
  slices_.clear();
  return status;
}

absl::Status TensorUpload::First() {
  ATTN_RETURN_IF_ERROR(CheckTensorLimits(message_, max_tensor_elements_));
  if (!message_.has_tensor()) {
    return core::InvalidField(
        "tensor", "the first message must carry the tensor's dtype and shape");
  }
  const v1::Tensor& tensor = message_.tensor();
  shape_text_ = wire::ShapeString(tensor);
  dtype_name_ = wire::DataTypeName(tensor.dtype());
  if (!tensor.handle().empty()) {
    return core::InvalidField("tensor.handle",
                              "must be empty: PutTensor stores new data");
  }
  const wire::ByteRange* data =
      ranges_.Find(tensor, v1::Tensor::kDataFieldNumber);
  if (data != nullptr && data->size != 0) {
    return core::InvalidField(
        "tensor.data", "must be empty: send the tensor's bytes in `chunk`");
  }
  ATTN_ASSIGN_OR_RETURN(const core::DType dtype,
                        wire::ToCoreDType(tensor.dtype(), "tensor.dtype"));
  ATTN_ASSIGN_OR_RETURN(size_, wire::ByteSize(tensor, "tensor"));
  std::optional<uint32_t> ttl;
  if (message_.has_ttl_seconds()) ttl = message_.ttl_seconds();
  ATTN_ASSIGN_OR_RETURN(ttl_, store_->TtlFor(ttl, "ttl_seconds"));
  // The declared size is held from now on, before any byte arrives.
  ATTN_ASSIGN_OR_RETURN(MemoryReservation memory, store_->Reserve(size_));
  dtype_ = dtype;
  shape_.assign(tensor.shape().begin(), tensor.shape().end());
  memory_ = std::move(memory);
  try {
    // Not cleared: each chunk is written once, where it goes.
    bytes_ = buffers_->Acquire(size_);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", size_, " bytes for the tensor"));
  }
  started_ = true;
  return Append();
}

absl::Status TensorUpload::Next() {
  if (message_.has_tensor()) {
    return core::InvalidField(
        "tensor", "only the first message of the stream may carry it");
  }
  if (message_.has_ttl_seconds()) {
    return core::InvalidField(
        "ttl_seconds", "only the first message of the stream may carry it");
  }
  return Append();
}

absl::Status TensorUpload::Append() {
  const wire::ByteRange* chunk =
      ranges_.Find(message_, v1::PutTensorRequest::kChunkFieldNumber);
  if (chunk == nullptr) return absl::OkStatus();
  if (chunk->size > size_ - stored_) {
    return core::InvalidField(
        "chunk", absl::StrCat("the stream carries more than the ", size_,
                              " bytes that tensor.dtype and tensor.shape "
                              "declare"));
  }
  view_.CopyTo(*chunk, bytes_.data() + stored_);
  stored_ += chunk->size;
  return absl::OkStatus();
}

absl::StatusOr<v1::PutTensorResponse> TensorUpload::Store(
    const std::string& owner) {
  if (!started_) {
    return core::InvalidField("tensor",
                              "the stream ended before its first message");
  }
  if (stored_ < size_) {
    return core::InvalidField(
        "chunk",
        absl::StrCat("the stream ended after ", stored_, " of the ", size_,
                     " bytes that tensor.dtype and tensor.shape declare"));
  }
  auto tensor = std::make_shared<ResidentTensor>(dtype_, std::move(shape_),
                                                 std::move(bytes_));
  tensor->memory = std::move(memory_);
  v1::PutTensorResponse stored;
  stored.set_handle(
      store_->Insert(owner, std::move(tensor), ttl_, TensorStore::kViaPut));
  stored.set_bytes(size_);
  stored.set_expires_in_seconds(absl::ToDoubleSeconds(ttl_));
  started_ = false;  // Stored once.
  size_ = stored_ = 0;
  return stored;
}

}  // namespace attnserve::server
