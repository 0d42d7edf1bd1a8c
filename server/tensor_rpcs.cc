#include "server/tensor_rpcs.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/grpc_bytes.h"
#include "attnserve/wire/tensor.h"
#include "server/call_tracker.h"
#include "server/compute_call.h"
#include "server/message_bytes.h"
#include "server/request_log.h"
#include "server/status_mapping.h"
#include "server/tensor_upload.h"

namespace attnserve::server {
namespace {

constexpr char kPutTensor[] = "PutTensor";
constexpr char kGetTensor[] = "GetTensor";

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

class PutTensorCall final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PutTensorCall(TensorRpcs* rpcs, grpc::CallbackServerContext* context,
                grpc::ByteBuffer* response)
      : rpcs_(rpcs),
        context_(context),
        response_(response),
        upload_(std::in_place, &rpcs->store(), &rpcs->buffers(),
                rpcs->config().max_tensor_elements) {
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
    StartRead(&received_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    const absl::Status status = upload_->Take(received_);
    received_.Clear();
    if (!status.ok()) {
      Stop(status);
      return;
    }
    StartRead(&received_);
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
  void EndOfStream() {
    if (context_->IsCancelled()) {
      const int64_t ns = cancelled_at_ns_.load();
      Stop(StoppedStatus(
          *context_, ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns),
          "the upload"));
      return;
    }
    absl::StatusOr<v1::PutTensorResponse> stored =
        upload_->Store(rpcs_->guard().Owner(*context_));
    if (stored.ok()) {
      *response_ = EncodeResponse(*stored, wire::OutgoingPayloads());
    }
    Stop(stored.status());
  }

  // Frees what was received (unless stored) and finishes.
  void Stop(const absl::Status& status) {
    record_.q_shape = upload_->shape_text();
    record_.dtype = upload_->dtype_name();
    upload_.reset();
    FinishLogged(this, &record_, status);
  }

  TensorRpcs* const rpcs_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_;
  RequestRecord record_;
  // The message being read, and the tensor it is assembled into.
  grpc::ByteBuffer received_;
  std::optional<TensorUpload> upload_;
  std::atomic<int64_t> cancelled_at_ns_{0};
};

class GetTensorCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GetTensorCall(TensorRpcs* rpcs, grpc::CallbackServerContext* context,
                const grpc::ByteBuffer& bytes)
      : rpcs_(rpcs), context_(context) {
    record_.op = kGetTensor;
    record_.request_id = RequestIdOf(*context);
    rpcs_->Register(context_);
    v1::GetTensorRequest request;
    const absl::Status parsed = ParseRequest(bytes, &request);
    // The guard first: a caller who may not call learns nothing more.
    absl::Status admitted =
        rpcs_->guard().Admit(*context_, kGetTensor, request);
    if (admitted.ok()) admitted = parsed;
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
    bytes_ = tensor_->Share();
    v1::GetTensorResponse first;
    v1::Tensor* header = first.mutable_tensor();
    header->set_dtype(wire::ToWireDType(tensor_->dtype()));
    header->mutable_shape()->Assign(tensor_->shape().begin(),
                                    tensor_->shape().end());
    record_.q_shape = wire::ShapeString(*header);
    record_.dtype = wire::DataTypeName(header->dtype());
    WriteNext(first.SerializeAsString());
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Stop(absl::CancelledError("the download was cancelled"));
      return;
    }
    if (offset_ >= bytes_.size()) {
      Stop(absl::OkStatus());
      return;
    }
    WriteNext("");
  }

  void OnDone() override {
    rpcs_->Unregister(context_);
    delete this;
  }

 private:
  // Writes a message of `head` (the encoding of its other fields) and the
  // next chunk, whose slice shares the stored tensor's bytes.
  void WriteNext(absl::string_view head) {
    const uint64_t n =
        std::min(rpcs_->config().chunk_bytes, bytes_.size() - offset_);
    out_ = wire::WithSharedBytesField(
        head, v1::GetTensorResponse::kChunkFieldNumber,
        absl::string_view(bytes_.data() + offset_, n), bytes_);
    offset_ += n;
    StartWrite(&out_);
  }

  void Stop(const absl::Status& status) {
    tensor_.reset();
    bytes_ = core::Buffer();
    FinishLogged(this, &record_, status);
  }

  TensorRpcs* const rpcs_;
  grpc::CallbackServerContext* const context_;
  RequestRecord record_;
  ResidentTensorPtr tensor_;
  // The stored tensor's bytes (shared, not copied), and the message being
  // written.
  core::Buffer bytes_;
  grpc::ByteBuffer out_;
  uint64_t offset_ = 0;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* TensorRpcs::PutTensor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return new PutTensorCall(this, context, response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TensorRpcs::GetTensor(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
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
