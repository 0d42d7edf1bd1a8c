#include "attnserve/client/client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "attnserve/client/status_conversion.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "attnserve/wire/grpc_bytes.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/tensor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "response_decoding.h"

namespace attnserve {

struct Client::Stubs {
  explicit Stubs(const std::shared_ptr<grpc::Channel>& channel)
      : attention(v1::AttentionService::NewStub(channel)),
        health(grpc::health::v1::Health::NewStub(channel)),
        bytes(std::make_unique<grpc::GenericStub>(channel)) {}

  std::unique_ptr<v1::AttentionService::Stub> attention;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // The compute RPCs, called with their encoded bytes.
  std::unique_ptr<grpc::GenericStub> bytes;
};

namespace {

// Makes the context of one call: deadline and the configured metadata.
void PrepareContext(const ClientOptions& options,
                    std::optional<absl::Duration> timeout,
                    grpc::ClientContext* context) {
  // Timeouts beyond a year mean "no deadline" (and cannot overflow the clock).
  constexpr absl::Duration kNoDeadline = absl::Hours(24 * 365);
  const absl::Duration t = timeout.value_or(options.default_timeout);
  if (t < kNoDeadline) {
    const absl::Duration clamped = std::max(t, absl::ZeroDuration());
    context->set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoNanoseconds(clamped));
  }
  for (const auto& [key, value] : options.metadata) {
    context->AddMetadata(key, value);
  }
  if (!options.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options.bearer_token);
  }
}

// Runs one unary call of a stub's blocking `method`.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Unary(
    const ClientOptions& options, std::optional<absl::Duration> timeout,
    Stub& stub,
    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                 Response*),
    const Request& request) {
  grpc::ClientContext context;
  PrepareContext(options, timeout, &context);
  Response response;
  const grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

using AttentionStub = v1::AttentionService::Stub;

// "/attnserve.v1.AttentionService/<name>".
std::string MethodNamed(absl::string_view name) {
  return absl::StrCat("/", v1::AttentionService::service_full_name(), "/",
                      name);
}

// "/attnserve.v1.AttentionService/FlashAttentionScore" for its request (gRPC
// copies the name when it creates the call).
template <typename Request>
std::string MethodOf() {
  absl::string_view name = Request::descriptor()->name();
  absl::ConsumeSuffix(&name, "Request");
  return MethodNamed(name);
}

// One streaming call on bytes, driven step by step on a completion queue of
// its own: each step blocks until it completed and says whether it did.
class ByteStream {
 public:
  ByteStream(grpc::GenericStub& stub, const std::string& method,
             grpc::ClientContext* context)
      : call_(stub.PrepareCall(context, method, &cq_)) {}
  ~ByteStream() {
    call_.reset();
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  bool Start() {
    call_->StartCall(this);
    return Wait();
  }
  bool Write(const grpc::ByteBuffer& bytes) {
    call_->Write(bytes, this);
    return Wait();
  }
  bool WritesDone() {
    call_->WritesDone(this);
    return Wait();
  }
  bool Read(grpc::ByteBuffer* bytes) {
    call_->Read(bytes, this);
    return Wait();
  }
  grpc::Status Finish() {
    grpc::Status status;
    call_->Finish(&status, this);
    Wait();
    return status;
  }

 private:
  bool Wait() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }

  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
};

// One unary compute call: the request's tensors are lent to gRPC from the
// request itself (wire::ToByteBuffer), the response decoded into `response`
// reusing its tensors' memory.
template <typename Request, typename Response>
absl::Status ComputeInto(const ClientOptions& options,
                         std::optional<absl::Duration> timeout,
                         grpc::GenericStub& stub, const Request& request,
                         Response* response) {
  const wire::EncodedMessage encoded =
      wire::EncodeMessage(request, wire::OutgoingPayloads());
  wire::SliceLoans loans;
  grpc::ByteBuffer received;
  grpc::Status status;
  {
    // The context holds the call, and the call the request's slices (e.g.
    // a request refused on its headers before all of it was sent): both go
    // before the loans are waited for.
    grpc::ClientContext context;
    PrepareContext(options, timeout, &context);
    const grpc::ByteBuffer sent = wire::ToByteBuffer(encoded, &loans);
    absl::Notification done;
    stub.UnaryCall(&context, MethodOf<Request>(), grpc::StubOptions(), &sent,
                   &received, [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
  }
  loans.Wait();
  if (!status.ok()) return FromGrpcStatus(status);
  return client_internal::DecodeResponse(received, response);
}

template <typename Request, typename Response>
absl::StatusOr<Response> ComputeReturning(const ClientOptions& options,
                                          std::optional<absl::Duration> timeout,
                                          grpc::GenericStub& stub,
                                          const Request& request) {
  Response response;
  const absl::Status status =
      ComputeInto(options, timeout, stub, request, &response);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path,
                                            ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<TlsOptions> TlsFromFiles(const std::string& ca_file,
                                        const std::string& cert_file,
                                        const std::string& key_file) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate and its key must be given together");
  }
  TlsOptions tls;
  tls.enabled = true;
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadPem(ca_file, "CA file");
    if (!pem.ok()) return pem.status();
    tls.root_certs_pem = *std::move(pem);
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(cert_file, "certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(key_file, "key");
    if (!key.ok()) return key.status();
    tls.client_cert_pem = *std::move(cert);
    tls.client_key_pem = *std::move(key);
  }
  return tls;
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(
    const TlsOptions& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.root_certs_pem;
  ssl.pem_cert_chain = tls.client_cert_pem;
  ssl.pem_private_key = tls.client_key_pem;
  return grpc::SslCredentials(ssl);
}

absl::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

absl::StatusOr<Client> Client::Connect(const std::string& target,
                                       const ClientOptions& options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("target: must not be empty");
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        "max_message_bytes: must be positive, got " +
        std::to_string(options.max_message_bytes));
  }
  if (options.tls.client_cert_pem.empty() !=
      options.tls.client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "tls: a client certificate and its key must be given together");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (options.tls.enabled && !options.tls.server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls.server_name);
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      target, ChannelCredentialsFor(options.tls), args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError("target: cannot create a channel to " +
                                      target);
  }
  return Client(std::move(channel), options);
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      options_(std::move(options)),
      stubs_(std::make_shared<const Stubs>(channel_)) {}

absl::StatusOr<v1::FlashAttentionScoreResponse> Client::FlashAttentionScore(
    const v1::FlashAttentionScoreRequest& request,
    std::optional<absl::Duration> timeout) const {
  return ComputeReturning<v1::FlashAttentionScoreRequest,
                          v1::FlashAttentionScoreResponse>(
      options_, timeout, *stubs_->bytes, request);
}

absl::StatusOr<v1::FlashAttentionScoreGradResponse>
Client::FlashAttentionScoreGrad(
    const v1::FlashAttentionScoreGradRequest& request,
    std::optional<absl::Duration> timeout) const {
  return ComputeReturning<v1::FlashAttentionScoreGradRequest,
                          v1::FlashAttentionScoreGradResponse>(
      options_, timeout, *stubs_->bytes, request);
}

absl::StatusOr<v1::NsaSelectedAttentionResponse> Client::NsaSelectedAttention(
    const v1::NsaSelectedAttentionRequest& request,
    std::optional<absl::Duration> timeout) const {
  return ComputeReturning<v1::NsaSelectedAttentionRequest,
                          v1::NsaSelectedAttentionResponse>(
      options_, timeout, *stubs_->bytes, request);
}

absl::StatusOr<v1::NsaSelectedAttentionGradResponse>
Client::NsaSelectedAttentionGrad(
    const v1::NsaSelectedAttentionGradRequest& request,
    std::optional<absl::Duration> timeout) const {
  return ComputeReturning<v1::NsaSelectedAttentionGradRequest,
                          v1::NsaSelectedAttentionGradResponse>(
      options_, timeout, *stubs_->bytes, request);
}

absl::Status Client::Compute(const v1::FlashAttentionScoreRequest& request,
                             v1::FlashAttentionScoreResponse* response,
                             std::optional<absl::Duration> timeout) const {
  return ComputeInto(options_, timeout, *stubs_->bytes, request, response);
}

absl::Status Client::Compute(const v1::FlashAttentionScoreGradRequest& request,
                             v1::FlashAttentionScoreGradResponse* response,
                             std::optional<absl::Duration> timeout) const {
  return ComputeInto(options_, timeout, *stubs_->bytes, request, response);
}

absl::Status Client::Compute(const v1::NsaSelectedAttentionRequest& request,
                             v1::NsaSelectedAttentionResponse* response,
                             std::optional<absl::Duration> timeout) const {
  return ComputeInto(options_, timeout, *stubs_->bytes, request, response);
}

absl::Status Client::Compute(const v1::NsaSelectedAttentionGradRequest& request,
                             v1::NsaSelectedAttentionGradResponse* response,
                             std::optional<absl::Duration> timeout) const {
  return ComputeInto(options_, timeout, *stubs_->bytes, request, response);
}

absl::StatusOr<v1::GetWorkspaceSizeResponse> Client::GetWorkspaceSize(
    const v1::GetWorkspaceSizeRequest& request,
    std::optional<absl::Duration> timeout) const {
  return Unary(options_, timeout, *stubs_->attention,
               &AttentionStub::GetWorkspaceSize, request);
}

absl::StatusOr<v1::GetServerInfoResponse> Client::GetServerInfo(
    std::optional<absl::Duration> timeout) const {
  return Unary(options_, timeout, *stubs_->attention,
               &AttentionStub::GetServerInfo, v1::GetServerInfoRequest());
}

absl::StatusOr<v1::PutTensorResponse> Client::PutTensor(
    v1::DataType dtype, const std::vector<int64_t>& shape,
    absl::string_view data, const PutOptions& options,
    std::optional<absl::Duration> timeout) const {
  v1::PutTensorRequest message;
  message.mutable_tensor()->set_dtype(dtype);
  message.mutable_tensor()->mutable_shape()->Assign(shape.begin(), shape.end());
  absl::StatusOr<uint64_t> expected =
      wire::ByteSize(message.tensor(), "tensor");
  if (!expected.ok()) return expected.status();
  if (*expected != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor.data: has ", data.size(), " bytes, expected ",
                     *expected, " for ", wire::ShapeString(message.tensor()),
                     " ", DataTypeName(dtype)));
  }
  if (options.ttl_seconds.has_value()) {
    message.set_ttl_seconds(*options.ttl_seconds);
  }
  const size_t chunk = std::max<size_t>(1, options.chunk_bytes);
  // The first message carries dtype, shape and the first chunk; each chunk
  // is lent to gRPC from `data` (no copy here), and each write waits for
  // flow control, so at most a chunk is buffered.
  wire::SliceLoans loans;
  grpc::Status status;
  grpc::ByteBuffer reply;
  {
    grpc::ClientContext context;
    PrepareContext(options_, timeout, &context);
    ByteStream stream(*stubs_->bytes, MethodNamed("PutTensor"), &context);
    bool ok = stream.Start();
    std::string head = message.SerializeAsString();
    size_t offset = 0;
    while (ok) {
      const size_t n = std::min(chunk, data.size() - offset);
      ok = stream.Write(wire::WithLentBytesField(
          head, v1::PutTensorRequest::kChunkFieldNumber, data.substr(offset, n),
          &loans));
      offset += n;
      head.clear();
      if (offset >= data.size()) break;
    }
    // A write that failed: the server ended the call; its status says why.
    if (ok) ok = stream.WritesDone();
    if (ok) stream.Read(&reply);
    status = stream.Finish();
  }
  loans.Wait();
  if (!status.ok()) return FromGrpcStatus(status);
  v1::PutTensorResponse response;
  if (!grpc::SerializationTraits<v1::PutTensorResponse>::Deserialize(&reply,
                                                                     &response)
           .ok()) {
    return absl::InternalError(
        "the server's response is not a valid attnserve.v1.PutTensorResponse");
  }
  return response;
}

absl::StatusOr<v1::PutTensorResponse> Client::PutTensor(
    const v1::Tensor& tensor, const PutOptions& options,
    std::optional<absl::Duration> timeout) const {
  return PutTensor(
      tensor.dtype(),
      std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()),
      tensor.data(), options, timeout);
}

absl::StatusOr<v1::Tensor> Client::GetTensor(
    const std::string& handle, std::optional<absl::Duration> timeout) const {
  v1::Tensor tensor;
  ATTN_RETURN_IF_ERROR(GetTensor(handle, &tensor, timeout));
  return tensor;
}

absl::Status Client::GetTensor(const std::string& handle, v1::Tensor* tensor,
                               std::optional<absl::Duration> timeout) const {
  v1::GetTensorRequest request;
  request.set_handle(handle);
  bool first = true;
  uint64_t expected = 0;
  uint64_t received = 0;
  absl::Status decoded;
  grpc::Status status;
  {
    grpc::ClientContext context;
    PrepareContext(options_, timeout, &context);
    ByteStream stream(*stubs_->bytes, MethodNamed("GetTensor"), &context);
    grpc::ByteBuffer sent;
    bool own = false;
    bool ok = stream.Start() &&
              grpc::SerializationTraits<v1::GetTensorRequest>::Serialize(
                  request, &sent, &own)
                  .ok() &&
              stream.Write(sent) && stream.WritesDone();
    // Each chunk is copied once, from the received slices to its place in
    // the tensor. (Copying on a second thread while this one receives the
    // next message was measured slower on two cores: the server's sending
    // needs the other core.)
    grpc::ByteBuffer bytes;
    std::vector<grpc::Slice> slices;
    while (ok && stream.Read(&bytes)) {
      v1::GetTensorResponse message;
      wire::ReceivedBytes view;
      wire::ReceivedPayloads ranges;
      decoded = wire::ReadSlices(bytes, &slices, &view);
      if (decoded.ok()) decoded = wire::DecodeMessage(view, &message, &ranges);
      if (decoded.ok() && first) {
        first = false;
        tensor->set_dtype(message.tensor().dtype());
        *tensor->mutable_shape() = message.tensor().shape();
        absl::StatusOr<uint64_t> size = wire::ByteSize(*tensor, "tensor");
        decoded = size.status();
        if (size.ok()) {
          expected = *size;
          client_internal::ResizeForCopy(tensor->mutable_data(), expected);
        }
      }
      const wire::ByteRange* chunk =
          decoded.ok()
              ? ranges.Find(message, v1::GetTensorResponse::kChunkFieldNumber)
              : nullptr;
      if (chunk != nullptr && chunk->size > expected - received) {
        decoded = absl::DataLossError(absl::StrCat("more than the ", expected,
                                                   " bytes of ",
                                                   wire::ShapeString(*tensor)));
      }
      if (!decoded.ok()) {
        context.TryCancel();
        break;
      }
      if (chunk != nullptr) {
        view.CopyTo(*chunk, tensor->mutable_data()->data() + received);
        received += chunk->size;
      }
    }
    status = stream.Finish();
  }
  if (!decoded.ok()) {
    return absl::InternalError(absl::StrCat(
        "the server's response is not a valid attnserve.v1.GetTensorResponse: ",
        decoded.message()));
  }
  if (!status.ok()) return FromGrpcStatus(status);
  if (first || received != expected) {
    return absl::DataLossError(
        absl::StrCat("GetTensor: received ", received, " bytes, expected ",
                     expected, " for ", wire::ShapeString(*tensor)));
  }
  return absl::OkStatus();
}

absl::Status Client::DeleteTensor(const std::string& handle,
                                  std::optional<absl::Duration> timeout) const {
  v1::DeleteTensorRequest request;
  request.set_handle(handle);
  return Unary(options_, timeout, *stubs_->attention,
               &AttentionStub::DeleteTensor, request)
      .status();
}

absl::StatusOr<ServingStatus> Client::Health(
    const std::string& service, std::optional<absl::Duration> timeout) const {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> response =
      Unary(options_, timeout, *stubs_->health,
            &grpc::health::v1::Health::Stub::Check, request);
  if (!response.ok()) return response.status();
  switch (response->status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

}  // namespace attnserve
