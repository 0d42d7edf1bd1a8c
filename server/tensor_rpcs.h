// The RPCs of resident tensors that stream: PutTensor (client streaming
// upload) and GetTensor (server streaming download). DeleteTensor is a
// unary call of AttentionService.
//
//   TensorRpcs rpcs(&guard, &store, &buffers, TensorRpcConfig{...});
//   // In AttentionService:
//   return rpcs.PutTensor(context, response);
//   ...
//   rpcs.CancelStreams();  // drain ran out of time: free the uploads
//
// Both are served on bytes (the wire codec, not protobuf's parse and
// serialization), so that a tensor's bytes are copied once between the
// socket's buffers and the stored tensor.
//
// PutTensor: the guard runs on the call's metadata before anything is read
// (auth, drain); then each message is taken by a TensorUpload
// (tensor_upload.h: the protocol's rules, the reservation, the pooled
// buffer). A stream cancelled by its client, stopped by its deadline or by
// the drain frees what it received at once. The stored tensor's handle,
// size and time to live are the answer.
//
// GetTensor: the tensor's dtype and shape, then its bytes in chunks of at
// most `chunk_bytes`, one message in flight at a time, the first of which
// also carries the first chunk. Each chunk is sent from the stored tensor
// itself (its slice shares the tensor's buffer), so a download copies
// nothing and holds no memory of its own.
//
// Every call logs one line (op, shape, dtype, status) and is counted in the
// metrics. Thread-safe.
#ifndef ATTNSERVE_SERVER_TENSOR_RPCS_H_
#define ATTNSERVE_SERVER_TENSOR_RPCS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/v1/attention.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/call_guard.h"
#include "server/tensor_store.h"

namespace attnserve::server {

struct TensorRpcConfig {
  // Largest element count of an uploaded tensor (--max_tensor_elements).
  int64_t max_tensor_elements = int64_t{1} << 28;
  // Bytes of tensor data per GetTensor message (--tensor_chunk_bytes, kept
  // below the message limit).
  uint64_t chunk_bytes = uint64_t{4} << 20;
};

class TensorRpcs {
 public:
  // `guard`, `store` and `buffers` (where uploads are received) must outlive
  // this object and every call it serves.
  TensorRpcs(const CallGuard* guard, TensorStore* store,
             core::BufferPool* buffers, const TensorRpcConfig& config)
      : guard_(guard), store_(store), buffers_(buffers), config_(config) {}
  TensorRpcs(const TensorRpcs&) = delete;
  TensorRpcs& operator=(const TensorRpcs&) = delete;

  // The raw methods: PutTensorRequest messages in, PutTensorResponse out;
  // GetTensorRequest in, GetTensorResponse messages out.
  grpc::ServerReadReactor<grpc::ByteBuffer>* PutTensor(
      grpc::CallbackServerContext* context, grpc::ByteBuffer* response);
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetTensor(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request);

  // Cancels every PutTensor and GetTensor in progress (their clients see
  // CANCELLED; uploads free what they received).
  void CancelStreams();
  // Streams in progress.
  int streams() const;

  // For the calls' bookkeeping.
  void Register(grpc::CallbackServerContext* context);
  void Unregister(grpc::CallbackServerContext* context);
  const CallGuard& guard() const { return *guard_; }
  TensorStore& store() const { return *store_; }
  core::BufferPool& buffers() const { return *buffers_; }
  const TensorRpcConfig& config() const { return config_; }

 private:
  const CallGuard* const guard_;
  TensorStore* const store_;
  core::BufferPool* const buffers_;
  const TensorRpcConfig config_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<grpc::CallbackServerContext*> streams_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_TENSOR_RPCS_H_
