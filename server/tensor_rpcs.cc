#include "server/tensor_rpcs.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/huge_pages.h"
#include "attnserve/wire/tensor.h"
#include "server/call_tracker.h"
#include "server/compute_call.h"
#include "server/request_limits.h"
#include "server/request_log.h"
#include "server/status_mapping.h"

namespace attnserve::server {
namespace {

constexpr char kPutTensor[] = "PutTensor";
constexpr char kGetTensor[] = "GetTensor";

// A buffer of `size` bytes on the heap, allocated and not touched (no
// zeroing): an upload writes each byte once, where it goes.
core::Buffer UntouchedBuffer(uint64_t size) {
  constexpr uint64_t kAlignment = 64;
  const uint64_t capacity =
      std::max(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment);
  void* data = std::aligned_alloc(kAlignment, capacity);
  if (data == nullptr) throw std::bad_alloc();
  return core::Buffer::Adopt(static_cast<char*>(data), size, capacity,
                             [](char* p) { std::free(p); });
}

// The status a stream stopped by its client or deadline ends with.
absl::Status StoppedStatus(const grpc::CallbackServerContext& context,
                           absl::Time cancelled_at, const char* what) {
  if (EndedByDeadline(DeadlineOf(context), cancelled_at, absl::Now())) {
    return absl::DeadlineExceededError(
        absl::StrCat("deadline passed during ", what));
  }
  return absl::CancelledError(absl::StrCat(what, " cancelled"));
}

// Logs the call's line and finishes it with `status`.
template <typename Reactor>
void FinishLogged(Reactor* reactor, RequestRecord* record,
                  const absl::Status& status) {
  SetOutcome(status, record);
  LogRequest(*record);
  reactor->Finish(ToGrpcStatus(status));
}

class PutTensorCall final
    : public grpc::ServerReadReactor<v1::PutTensorRequest> {
 public:
  PutTensorCall(TensorRpcs* rpcs, grpc::CallbackServerContext* context,
                v1::PutTensorResponse* response)
      : rpcs_(rpcs), context_(context), response_(response) {
    record_.op = kPutTensor;
    record_.request_id = RequestIdOf(*context);
    rpcs_->Register(context_);
    // Auth and drain need no message: refuse before reading any data.
    absl::Status admitted =
        rpcs_->guard().Admit(*context_, kPutTensor, v1::PutTensorRequest());
    if (!admitted.ok()) {
      Stop(admitted);
      return;
    }
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    absl::Status status = started_ ? Next() : First();
    if (!status.ok()) {
      Stop(status);
      return;
    }
    StartRead(&message_);
  }

  void OnCancel() override {
    int64_t expected = 0;
    cancelled_at_ns_.compare_exchange_strong(expected,
                                             absl::ToUnixNanos(absl::Now()));
  }

  void OnDone() override {
    rpcs_->Unregister(context_);
    delete this;
  }

 private:
  absl::Status First() {
    ATTN_RETURN_IF_ERROR(
        CheckTensorLimits(message_, rpcs_->config().max_tensor_elements));
    if (!message_.has_tensor()) {
      return core::InvalidField(
          "tensor",
          "the first message must carry the tensor's dtype and shape");
    }
    const v1::Tensor& tensor = message_.tensor();
    record_.q_shape = wire::ShapeString(tensor);
    record_.dtype = wire::DataTypeName(tensor.dtype());
    if (!tensor.handle().empty()) {
      return core::InvalidField("tensor.handle",
                                "must be empty: PutTensor stores new data");
    }
    if (!tensor.data().empty()) {
      return core::InvalidField(
          "tensor.data", "must be empty: send the tensor's bytes in `chunk`");
    }
    ATTN_ASSIGN_OR_RETURN(const core::DType dtype,
                          wire::ToCoreDType(tensor.dtype(), "tensor.dtype"));
    ATTN_ASSIGN_OR_RETURN(size_, wire::ByteSize(tensor, "tensor"));
    std::optional<uint32_t> ttl;
    if (message_.has_ttl_seconds()) ttl = message_.ttl_seconds();
    ATTN_ASSIGN_OR_RETURN(ttl_, rpcs_->store().TtlFor(ttl, "ttl_seconds"));
    // The declared size is held from now on, before any byte arrives.
    ATTN_ASSIGN_OR_RETURN(MemoryReservation memory,
                          rpcs_->store().Reserve(size_));
    dtype_ = dtype;
    shape_.assign(tensor.shape().begin(), tensor.shape().end());
    memory_ = std::move(memory);
    try {
      // Allocated, not touched: each chunk is written once, where it goes.
      bytes_ = UntouchedBuffer(size_);
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", size_, " bytes for the tensor"));
    }
    wire::AdviseHugePages(bytes_.data(), size_);
    started_ = true;
    return Append();
  }

  absl::Status Next() {
    if (message_.has_tensor()) {
      return core::InvalidField("tensor",
                                "only the first message of the stream may "
                                "carry it");
    }
    if (message_.has_ttl_seconds()) {
      return core::InvalidField(
          "ttl_seconds", "only the first message of the stream may carry it");
    }
    return Append();
  }

  absl::Status Append() {
    const std::string& chunk = message_.chunk();
    const uint64_t received = received_;
    if (chunk.size() > size_ - received) {
      return core::InvalidField(
          "chunk", absl::StrCat("the stream carries more than the ", size_,
                                " bytes that tensor.dtype and tensor.shape "
                                "declare"));
    }
    if (!chunk.empty()) {
      std::memcpy(bytes_.data() + received_, chunk.data(), chunk.size());
    }
    received_ += chunk.size();
    return absl::OkStatus();
  }

  void EndOfStream() {
    if (context_->IsCancelled()) {
      const int64_t ns = cancelled_at_ns_.load();
      Stop(StoppedStatus(
          *context_, ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns),
          "the upload"));
      return;
    }
    if (!started_) {
      Stop(core::InvalidField("tensor",
                              "the stream ended before its first message"));
      return;
    }
    if (received_ < size_) {
      Stop(core::InvalidField(
          "chunk",
          absl::StrCat("the stream ended after ", received_, " of the ", size_,
                       " bytes that tensor.dtype and tensor.shape "
                       "declare")));
      return;
    }
    auto tensor = std::make_shared<ResidentTensor>(dtype_, std::move(shape_),
                                                   std::move(bytes_));
    tensor->memory = std::move(memory_);
    const std::string owner = rpcs_->guard().Owner(*context_);
    response_->set_handle(rpcs_->store().Insert(owner, std::move(tensor), ttl_,
                                                TensorStore::kViaPut));
    response_->set_bytes(size_);
    response_->set_expires_in_seconds(absl::ToDoubleSeconds(ttl_));
    Stop(absl::OkStatus());
  }

  // Frees what was received (unless stored) and finishes.
  void Stop(const absl::Status& status) {
    bytes_ = core::Buffer();
    memory_.Reset();
    FinishLogged(this, &record_, status);
  }

  TensorRpcs* const rpcs_;
  grpc::CallbackServerContext* const context_;
  v1::PutTensorResponse* const response_;
  RequestRecord record_;
  v1::PutTensorRequest message_;
  bool started_ = false;
  core::DType dtype_ = core::DType::kFloat32;
  std::vector<int64_t> shape_;
  uint64_t size_ = 0;
  absl::Duration ttl_;
  // The bytes received so far, in a buffer of the declared size, and their
  // share of the memory budget.
  core::Buffer bytes_;
  uint64_t received_ = 0;
  MemoryReservation memory_;
  std::atomic<int64_t> cancelled_at_ns_{0};
};

class GetTensorCall final
    : public grpc::ServerWriteReactor<v1::GetTensorResponse> {
 public:
  GetTensorCall(TensorRpcs* rpcs, grpc::CallbackServerContext* context,
                const v1::GetTensorRequest& request)
      : rpcs_(rpcs), context_(context) {
    record_.op = kGetTensor;
    record_.request_id = RequestIdOf(*context);
    rpcs_->Register(context_);
    absl::Status admitted =
        rpcs_->guard().Admit(*context_, kGetTensor, request);
    if (!admitted.ok()) {
      Stop(admitted);
      return;
    }
    absl::StatusOr<ResidentTensorPtr> tensor =
        rpcs_->store().Find(rpcs_->guard().Owner(*context_), request.handle(),
                            "handle", TensorStore::kUseGet);
    if (!tensor.ok()) {
      Stop(tensor.status());
      return;
    }
    tensor_ = *std::move(tensor);
    v1::Tensor* header = message_.mutable_tensor();
    header->set_dtype(wire::ToWireDType(tensor_->dtype()));
    header->mutable_shape()->Assign(tensor_->shape().begin(),
                                    tensor_->shape().end());
    record_.q_shape = wire::ShapeString(*header);
    record_.dtype = wire::DataTypeName(header->dtype());
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Stop(absl::CancelledError("the download was cancelled"));
      return;
    }
    if (offset_ >= tensor_->size()) {
      Stop(absl::OkStatus());
      return;
    }
    message_.clear_tensor();
    WriteNext();
  }

  void OnDone() override {
    rpcs_->Unregister(context_);
    delete this;
  }

 private:
  void WriteNext() {
    const uint64_t n =
        std::min(rpcs_->config().chunk_bytes, tensor_->size() - offset_);
    message_.mutable_chunk()->assign(tensor_->data() + offset_, n);
    offset_ += n;
    StartWrite(&message_);
  }

  void Stop(const absl::Status& status) {
    tensor_.reset();
    FinishLogged(this, &record_, status);
  }

  TensorRpcs* const rpcs_;
  grpc::CallbackServerContext* const context_;
  RequestRecord record_;
  ResidentTensorPtr tensor_;
  v1::GetTensorResponse message_;
  uint64_t offset_ = 0;
};

}  // namespace

grpc::ServerReadReactor<v1::PutTensorRequest>* TensorRpcs::PutTensor(
    grpc::CallbackServerContext* context, v1::PutTensorResponse* response) {
  return new PutTensorCall(this, context, response);
}

grpc::ServerWriteReactor<v1::GetTensorResponse>* TensorRpcs::GetTensor(
    grpc::CallbackServerContext* context, const v1::GetTensorRequest* request) {
  return new GetTensorCall(this, context, *request);
}

void TensorRpcs::Register(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&mu_);
  streams_.insert(context);
}

void TensorRpcs::Unregister(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&mu_);
  streams_.erase(context);
}

void TensorRpcs::CancelStreams() {
  absl::MutexLock lock(&mu_);
  for (grpc::CallbackServerContext* context : streams_) context->TryCancel();
}

int TensorRpcs::streams() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

}  // namespace attnserve::server
