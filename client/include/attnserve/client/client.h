// A typed, blocking client for an attnserve server.
//
// One Client wraps one gRPC channel and offers a method per RPC of
// attnserve.v1.AttentionService plus the standard grpc.health.v1 check. Every
// method takes an optional per-call timeout (the option's default otherwise)
// and returns the response or an absl::Status with the server's code and
// message; google.rpc.BadRequest field violations stay reachable through
// FieldViolations() (see status_conversion.h). Example:
//
//   ATTN_ASSIGN_OR_RETURN(attnserve::Client client,
//                         attnserve::Client::Connect("127.0.0.1:50051"));
//   ATTN_ASSIGN_OR_RETURN(attnserve::v1::GetServerInfoResponse info,
//                         client.GetServerInfo(absl::Seconds(5)));
//
// Resident tensors: PutTensor uploads a tensor of any size in chunks and
// returns its handle, which any tensor field of a request may carry instead
// of data (TensorHandle() in tensor_helpers.h); TensorRetention on a request
// keeps its inputs and outputs on the server; GetTensor downloads a tensor
// and DeleteTensor frees it. resident.h resends data when a server answers
// NOT_FOUND.
//
//   ATTN_ASSIGN_OR_RETURN(v1::PutTensorResponse key,
//                         client.PutTensor(key_tensor));
//   *request.mutable_key() = TensorHandle(key.handle());
//
// Thread-safety: a Client is cheap to copy (copies share the channel) and all
// its methods are const and may be called concurrently.
#ifndef ATTNSERVE_CLIENT_CLIENT_H_
#define ATTNSERVE_CLIENT_CLIENT_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "attnserve/v1/attention.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"

namespace attnserve {

// Transport security of a channel made by Client::Connect.
struct TlsOptions {
  // Speak TLS (the server runs with --tls_cert/--tls_key).
  bool enabled = false;
  // CA certificates (PEM) the server's certificate must chain to; empty =
  // the system's roots.
  std::string root_certs_pem;
  // Client certificate chain and key (PEM) for mutual TLS; both or neither.
  std::string client_cert_pem;
  std::string client_key_pem;
  // Name the server's certificate is checked against (and sent as SNI)
  // instead of the target's host, e.g. "attn.internal" when dialing an IP.
  std::string server_name;
};

// TlsOptions (enabled) read from PEM files; any path may be empty (CA: the
// system's roots; cert and key: no client certificate). NOT_FOUND naming
// the file when one cannot be read, INVALID_ARGUMENT when only one of cert
// and key is given.
absl::StatusOr<TlsOptions> TlsFromFiles(const std::string& ca_file,
                                        const std::string& cert_file,
                                        const std::string& key_file);

// The gRPC channel credentials for `tls`: TLS with its roots and client
// certificate when enabled, plaintext otherwise. Use with
// grpc::ChannelArguments::SetSslTargetNameOverride(tls.server_name) when a
// name is set.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(
    const TlsOptions& tls);

struct ClientOptions {
  // Largest message sent or received, in bytes (tensors travel inline).
  int max_message_bytes = 1 << 30;
  // Timeout of calls made without one; absl::InfiniteDuration() (or anything
  // beyond a year) = no deadline.
  absl::Duration default_timeout = absl::Minutes(5);
  // Metadata sent with every call, e.g. {"x-request-id", "job-17"}. Keys
  // must be lower-case.
  std::vector<std::pair<std::string, std::string>> metadata;
  // Sent as `authorization: Bearer <token>` with every call when not empty.
  std::string bearer_token;
  // TLS for channels made by Connect(); plaintext when not enabled.
  TlsOptions tls;
};

// How PutTensor sends a tensor.
struct PutOptions {
  // Time to live on the server; unset = the server's default.
  std::optional<uint32_t> ttl_seconds;
  // Bytes of data per message (each message stays far below the message
  // limit, so tensors of any size travel).
  size_t chunk_bytes = size_t{4} << 20;
};

// Result of the grpc.health.v1 Check method.
enum class ServingStatus {
  kUnknown,
  kServing,
  kNotServing,
  kServiceUnknown,
};

// "UNKNOWN", "SERVING", "NOT_SERVING" or "SERVICE_UNKNOWN".
absl::string_view ServingStatusName(ServingStatus status);

class Client {
 public:
  // Creates a channel to `target`, e.g. "127.0.0.1:50051" or
  // "dns:///attn.internal:50051": plain-text HTTP/2, or TLS as options.tls
  // says. Connecting is lazy: a server that is down (or a TLS handshake that
  // fails) shows up as UNAVAILABLE on the first call. Fails with
  // INVALID_ARGUMENT for an empty target, a non-positive message size, or a
  // client certificate without its key (or the reverse).
  static absl::StatusOr<Client> Connect(const std::string& target,
                                        const ClientOptions& options = {});

  // Uses an existing channel (e.g. one with TLS credentials, or an in-process
  // channel in tests); `channel` must not be null. The channel's own
  // arguments decide the message limits; options.max_message_bytes is unused.
  explicit Client(std::shared_ptr<grpc::Channel> channel,
                  ClientOptions options = {});

  // Each call blocks until the response arrives, the timeout passes
  // (DEADLINE_EXCEEDED) or the call fails. `timeout` defaults to
  // options.default_timeout.
  absl::StatusOr<v1::FlashAttentionScoreResponse> FlashAttentionScore(
      const v1::FlashAttentionScoreRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::FlashAttentionScoreGradResponse> FlashAttentionScoreGrad(
      const v1::FlashAttentionScoreGradRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::NsaSelectedAttentionResponse> NsaSelectedAttention(
      const v1::NsaSelectedAttentionRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::NsaSelectedAttentionGradResponse> NsaSelectedAttentionGrad(
      const v1::NsaSelectedAttentionGradRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // The same four calls, filling `response` instead of returning one (on an
  // error it is left unspecified). The tensors' bytes are received into the
  // memory `response` already holds, so a caller that reuses one response
  // object for a series of calls receives into warm memory, not into fresh
  // allocations. The request's tensor bytes are sent from where they are,
  // without a serialized copy (also by the four calls above); `request` must
  // not change until the call returns.
  absl::Status Compute(
      const v1::FlashAttentionScoreRequest& request,
      v1::FlashAttentionScoreResponse* response,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::Status Compute(
      const v1::FlashAttentionScoreGradRequest& request,
      v1::FlashAttentionScoreGradResponse* response,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::Status Compute(
      const v1::NsaSelectedAttentionRequest& request,
      v1::NsaSelectedAttentionResponse* response,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::Status Compute(
      const v1::NsaSelectedAttentionGradRequest& request,
      v1::NsaSelectedAttentionGradResponse* response,
      std::optional<absl::Duration> timeout = std::nullopt) const;

  absl::StatusOr<v1::GetWorkspaceSizeResponse> GetWorkspaceSize(
      const v1::GetWorkspaceSizeRequest& request,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      std::optional<absl::Duration> timeout = std::nullopt) const;

  // Uploads a tensor of `dtype` and `shape` whose bytes (row-major,
  // little-endian, prod(shape) * itemsize of them) are `data`, in messages
  // of options.chunk_bytes; returns its handle, size and time to live.
  // INVALID_ARGUMENT before sending anything when the sizes disagree.
  absl::StatusOr<v1::PutTensorResponse> PutTensor(
      v1::DataType dtype, const std::vector<int64_t>& shape,
      absl::string_view data, const PutOptions& options = {},
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // The same for a tensor message's dtype, shape and data.
  absl::StatusOr<v1::PutTensorResponse> PutTensor(
      const v1::Tensor& tensor, const PutOptions& options = {},
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // Downloads the tensor `handle`: dtype, shape and all its data in one
  // Tensor (which may hold more than one message could). NOT_FOUND when the
  // server does not hold it for these credentials.
  absl::StatusOr<v1::Tensor> GetTensor(
      const std::string& handle,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // The same into `tensor`, whose data's memory is reused when it has room
  // (e.g. a series of downloads into one Tensor lands in warm memory). On
  // an error `tensor` is unspecified.
  absl::Status GetTensor(
      const std::string& handle, v1::Tensor* tensor,
      std::optional<absl::Duration> timeout = std::nullopt) const;
  // Frees the tensor `handle` on the server; an unknown handle is not an
  // error.
  absl::Status DeleteTensor(
      const std::string& handle,
      std::optional<absl::Duration> timeout = std::nullopt) const;

  // grpc.health.v1.Health/Check for `service` ("" = the whole server).
  // A server that does not know `service` answers NOT_FOUND.
  absl::StatusOr<ServingStatus> Health(
      const std::string& service = "",
      std::optional<absl::Duration> timeout = std::nullopt) const;

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  struct Stubs;

  std::shared_ptr<grpc::Channel> channel_;
  ClientOptions options_;
  std::shared_ptr<const Stubs> stubs_;
};

}  // namespace attnserve

#endif  // ATTNSERVE_CLIENT_CLIENT_H_
