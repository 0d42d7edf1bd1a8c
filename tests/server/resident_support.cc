#include "tests/server/resident_support.h"

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "tests/server/test_server.h"

namespace attnserve::server::testing {

namespace {

absl::Status ToAbsl(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace

absl::StatusOr<v1::PutTensorResponse> PutRaw(
    v1::AttentionService::Stub& stub, const v1::Tensor& tensor,
    size_t chunk_bytes, std::optional<uint32_t> ttl_seconds,
    const std::string& authorization) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  if (!authorization.empty()) {
    context.AddMetadata("authorization", authorization);
  }
  v1::PutTensorResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PutTensorRequest>> writer =
      stub.PutTensor(&context, &response);
  v1::PutTensorRequest message;
  message.mutable_tensor()->set_dtype(tensor.dtype());
  *message.mutable_tensor()->mutable_shape() = tensor.shape();
  if (ttl_seconds.has_value()) message.set_ttl_seconds(*ttl_seconds);
  const std::string& data = tensor.data();
  size_t offset = 0;
  do {
    const size_t n = std::min(chunk_bytes, data.size() - offset);
    message.set_chunk(data.substr(offset, n));
    offset += n;
    if (!writer->Write(message)) break;
    message.Clear();
  } while (offset < data.size());
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return ToAbsl(status);
  return response;
}

absl::StatusOr<v1::Tensor> GetRaw(v1::AttentionService::Stub& stub,
                                  const std::string& handle,
                                  const std::string& authorization,
                                  int* messages) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  if (!authorization.empty()) {
    context.AddMetadata("authorization", authorization);
  }
  v1::GetTensorRequest request;
  request.set_handle(handle);
  std::unique_ptr<grpc::ClientReader<v1::GetTensorResponse>> reader =
      stub.GetTensor(&context, request);
  v1::Tensor tensor;
  v1::GetTensorResponse message;
  int count = 0;
  while (reader->Read(&message)) {
    if (count++ == 0) {
      tensor.set_dtype(message.tensor().dtype());
      *tensor.mutable_shape() = message.tensor().shape();
    } else if (message.has_tensor()) {
      return absl::InternalError("a later message carried `tensor` again");
    }
    tensor.mutable_data()->append(message.chunk());
  }
  const grpc::Status status = reader->Finish();
  if (messages != nullptr) *messages = count;
  if (!status.ok()) return ToAbsl(status);
  return tensor;
}

absl::Status DeleteRaw(v1::AttentionService::Stub& stub,
                       const std::string& handle,
                       const std::string& authorization) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  if (!authorization.empty()) {
    context.AddMetadata("authorization", authorization);
  }
  v1::DeleteTensorRequest request;
  request.set_handle(handle);
  v1::DeleteTensorResponse response;
  return ToAbsl(stub.DeleteTensor(&context, request, &response));
}

std::string Trailing(const grpc::ClientContext& context,
                     const std::string& key) {
  const auto& trailing = context.GetServerTrailingMetadata();
  const auto it = trailing.find(key);
  if (it == trailing.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace attnserve::server::testing
