// Helpers of the resident-tensor server tests: raw PutTensor / GetTensor
// streams and DeleteTensor calls through the generated stub, and the server's
// trailing metadata.
//
//   absl::StatusOr<v1::PutTensorResponse> put =
//       PutRaw(stub, tensor, /*chunk_bytes=*/1000);
//   absl::StatusOr<v1::Tensor> back = GetRaw(stub, put->handle());
//   absl::Status deleted = DeleteRaw(stub, put->handle());
#ifndef ATTNSERVE_TESTS_SERVER_RESIDENT_SUPPORT_H_
#define ATTNSERVE_TESTS_SERVER_RESIDENT_SUPPORT_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace attnserve::server::testing {

// Uploads `tensor` (dtype, shape, data) in chunks of `chunk_bytes`; the first
// message carries the first chunk. `metadata` is added to the call (e.g.
// {"authorization", "Bearer ..."}).
absl::StatusOr<v1::PutTensorResponse> PutRaw(
    v1::AttentionService::Stub& stub, const v1::Tensor& tensor,
    size_t chunk_bytes = size_t{1} << 20,
    std::optional<uint32_t> ttl_seconds = std::nullopt,
    const std::string& authorization = "");

// Downloads `handle` into one tensor; also counts the messages received.
absl::StatusOr<v1::Tensor> GetRaw(v1::AttentionService::Stub& stub,
                                  const std::string& handle,
                                  const std::string& authorization = "",
                                  int* messages = nullptr);

// Deletes `handle` (DeleteTensor); the call's status.
absl::Status DeleteRaw(v1::AttentionService::Stub& stub,
                       const std::string& handle,
                       const std::string& authorization = "");

// The value of trailing metadata `key` of a finished call, or "".
std::string Trailing(const grpc::ClientContext& context,
                     const std::string& key);

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_RESIDENT_SUPPORT_H_
