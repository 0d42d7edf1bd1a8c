#include "server/call_tensors.h"

#include <cassert>
#include <memory>
#include <optional>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/tensor.h"
#include "attnserve/wire/tensor_fields.h"

namespace attnserve::server {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Calls f(name, tensor) for every tensor field of `request` that is set and
// carries data (not a handle).
template <typename MessageT, typename F>
void ForEachDataTensor(MessageT* request, F f) {
  if constexpr (std::is_const_v<MessageT>) {
    wire::ForEachTensorField(
        *request, [&](const FieldDescriptor& field, const v1::Tensor& tensor) {
          if (tensor.handle().empty()) f(field.name(), tensor);
        });
  } else {
    wire::ForEachTensorField(
        request, [&](const FieldDescriptor& field, v1::Tensor* tensor) {
          if (tensor->handle().empty()) f(field.name(), tensor);
        });
  }
}

}  // namespace

CallTensors::CallTensors(TensorStore* store, std::string owner,
                         const v1::TensorRetention& retention)
    : store_(store), owner_(std::move(owner)), retention_(retention) {}

CallTensors::~CallTensors() = default;

void CallTensors::SetPayloads(wire::RequestPayloads* received,
                              wire::OutgoingPayloads* outgoing) {
  received_ = received;
  outgoing_ = outgoing;
}

absl::Status CallTensors::CheckRetention() {
  if (store_ == nullptr) {
    if (outputs_stored()) {
      return absl::UnimplementedError(
          "retention: this server keeps no tensors");
    }
    return absl::OkStatus();
  }
  std::optional<uint32_t> ttl;
  if (retention_.has_ttl_seconds()) ttl = retention_.ttl_seconds();
  ATTN_ASSIGN_OR_RETURN(ttl_, store_->TtlFor(ttl, "retention.ttl_seconds"));
  return absl::OkStatus();
}

absl::StatusOr<core::TensorView> CallTensors::Resolve(
    const std::string& field, const std::string& handle) {
  if (store_ == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        field, ".handle: this server keeps no tensors; send the data instead"));
  }
  ATTN_ASSIGN_OR_RETURN(ResidentTensorPtr tensor,
                        store_->Find(owner_, handle, field + ".handle",
                                     TensorStore::kUseCompute));
  held_.push_back(tensor);
  handles_[field] = handle;
  return tensor->view();
}

absl::Status CallTensors::ReserveKept(const Message& request,
                                      uint64_t output_bytes) {
  uint64_t bytes = 0;
  if (retention_.keep()) {
    ForEachDataTensor(&request, [&](const std::string&, const v1::Tensor& t) {
      // Received as a payload: joined now (the conversion already joined
      // the tensors it did not leave in their received chunks), so that
      // KeepInputs finds the copy after the received bytes are gone.
      const core::Buffer* received =
          received_ == nullptr
              ? nullptr
              : received_->Get(t, v1::Tensor::kDataFieldNumber);
      bytes += received != nullptr ? received->size() : t.data().size();
    });
  }
  if (outputs_stored()) {
    bytes =
        output_bytes > UINT64_MAX - bytes ? UINT64_MAX : bytes + output_bytes;
  } else {
    return absl::OkStatus();
  }
  ATTN_ASSIGN_OR_RETURN(reserved_, store_->Reserve(bytes));
  kept_bytes_ = bytes;
  return absl::OkStatus();
}

std::string CallTensors::Keep(const std::string& field,
                              ResidentTensorPtr tensor) {
  tensor->memory = reserved_.Split(tensor->size());
  std::string handle = store_->Insert(owner_, std::move(tensor), ttl_,
                                      TensorStore::kViaRetention);
  handles_[field] = handle;
  return handle;
}

void CallTensors::Put(const std::string& field, core::HostTensor tensor,
                      v1::Tensor* out) {
  if (!outputs_stored()) {
    MoveToProto(std::move(tensor), out, outgoing_);
    return;
  }
  auto kept = std::make_shared<ResidentTensor>(
      tensor.dtype, std::move(tensor.shape), std::move(tensor.bytes));
  out->set_dtype(wire::ToWireDType(kept->dtype()));
  out->mutable_shape()->Assign(kept->shape().begin(), kept->shape().end());
  const std::string handle = Keep(field, kept);
  if (retention_.outputs_by_handle()) {
    out->set_handle(handle);
    return;
  }
  if (outgoing_ != nullptr) {
    // The response is sent from the stored bytes: one buffer, two owners,
    // no copy. The tensor is held until the call is done, so that its bytes
    // count against the budget while they are sent even if the entry is
    // deleted meanwhile.
    outgoing_->Set(out, v1::Tensor::kDataFieldNumber, kept->Share());
    held_.push_back(std::move(kept));
    return;
  }
  out->set_data(kept->data(), kept->size());
}

void CallTensors::KeepInputs(const Message& request) {
  if (!retention_.keep()) return;
  ForEachDataTensor(&request, [&](const std::string& name,
                                  const v1::Tensor& t) {
    // Checked by the conversion, so the dtype is a known one.
    absl::StatusOr<core::DType> dtype = wire::ToCoreDType(t.dtype(), name);
    assert(dtype.ok());
    const core::Buffer* received =
        received_ == nullptr ? nullptr
                             : received_->Get(t, v1::Tensor::kDataFieldNumber);
    // A received payload is kept as the buffer it was joined into (no
    // further copy); data held by the message itself is copied once.
    core::Buffer bytes = received != nullptr
                             ? received->Share()
                             : core::Buffer(t.data().data(), t.data().size());
    auto kept = std::make_shared<ResidentTensor>(
        *dtype, std::vector<int64_t>(t.shape().begin(), t.shape().end()),
        std::move(bytes));
    Keep(name, std::move(kept));
  });
}

void CallTensors::FillHandles(
    google::protobuf::Map<std::string, std::string>* out) const {
  for (const auto& [field, handle] : handles_) (*out)[field] = handle;
}

}  // namespace attnserve::server
