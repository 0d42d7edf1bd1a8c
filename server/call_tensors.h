// The resident tensors of one compute call: the stored tensors its request
// names by handle, and what it keeps on the server after it ran
// (TensorRetention). The pipeline (rpc_pipeline.h) makes one per call and
// uses it at four points, the same for every operator:
//
//   CallTensors tensors(&store, guard.Owner(context), request.retention());
//   ATTN_RETURN_IF_ERROR(tensors.CheckRetention());
//   ATTN_ASSIGN_OR_RETURN(Args args, Rpc::ToArgs(request, &tensors));  // 1
//   ATTN_RETURN_IF_ERROR(tensors.ReserveKept(request, call.output_bytes()));
//   ... run ...
//   Rpc::Respond(std::move(result), &response, tensors);               // 2
//   tensors.KeepInputs(&request);                                       // 3
//   tensors.FillHandles(response.mutable_handles());
//   ... when gRPC is done with the call:
//   tensors.ReturnLent();                                               // 4
//
// 1. Resolve(): a handle becomes a view of the stored bytes (no copy); the
//    tensor is held until this object goes away, so the bytes stay valid
//    even if the entry expires or is deleted meanwhile.
// 2. Put(): outputs move into the response, or, when kept, into the store
//    (no copy). A kept output that the response also carries is lent to the
//    response: the response's `data` field points at the stored buffer
//    until ReturnLent() takes it back, so the same bytes are stored and sent
//    without a copy. With outputs_by_handle the response carries dtype,
//    shape and handle only.
// 3. With retention.keep, the inputs sent as data move from the request
//    into the store once the run no longer reads them (no copy).
// 4. ReturnLent() must run before the response is destroyed (the call's
//    OnDone), and only once gRPC has serialized the response.
//
// The bytes kept are reserved in the store before the call is admitted, so
// a call whose tensors would not fit is refused at once and one that ran
// never fails to keep them. Steps happen one after the other on the threads
// the pipeline uses (not concurrently), so the object needs no lock.
#ifndef ATTNSERVE_SERVER_CALL_TENSORS_H_
#define ATTNSERVE_SERVER_CALL_TENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnserve/v1/attention.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/message.h"
#include "server/memory_budget.h"
#include "server/proto_convert.h"
#include "server/tensor_store.h"

namespace attnserve::server {

class CallTensors final : public HandleResolver, public OutputSink {
 public:
  // `store` must outlive this object; null = the server keeps no tensors
  // (every handle is NOT_FOUND, retention is refused).
  CallTensors(TensorStore* store, std::string owner,
              const v1::TensorRetention& retention);
  ~CallTensors() override;
  CallTensors(const CallTensors&) = delete;
  CallTensors& operator=(const CallTensors&) = delete;

  // INVALID_ARGUMENT for a ttl_seconds the store does not accept
  // ("retention.ttl_seconds").
  absl::Status CheckRetention();

  // Whether the outputs go back as handles only (not counted against the
  // message size).
  bool outputs_by_handle() const { return retention_.outputs_by_handle(); }

  absl::StatusOr<core::TensorView> Resolve(const std::string& field,
                                           const std::string& handle) override;

  // Reserves in the store the bytes this call will keep: its inputs sent as
  // data (keep) and its outputs, `output_bytes` (keep or
  // outputs_by_handle). RESOURCE_EXHAUSTED when they do not fit.
  absl::Status ReserveKept(const google::protobuf::Message& request,
                           uint64_t output_bytes);
  // What ReserveKept reserved: bytes the job's own admission need not count
  // again.
  uint64_t kept_bytes() const { return kept_bytes_; }

  void Put(const std::string& field, core::HostTensor tensor,
           v1::Tensor* out) override;

  // Moves the data of `request`'s tensor fields into the store (keep only).
  void KeepInputs(google::protobuf::Message* request);

  // Field name -> handle of every tensor of the call on the server: inputs
  // sent by handle, and what was kept.
  void FillHandles(google::protobuf::Map<std::string, std::string>* out) const;

  // Takes the lent output buffers back out of the response.
  void ReturnLent();

 private:
  // Stores `tensor` (its share of the reservation attached) and records its
  // handle under `field`.
  std::string Keep(const std::string& field, ResidentTensorPtr tensor);

  TensorStore* const store_;
  const std::string owner_;
  const v1::TensorRetention retention_;
  absl::Duration ttl_;
  // Tensors the request names by handle, held for the call.
  std::vector<ResidentTensorPtr> held_;
  std::map<std::string, std::string> handles_;
  MemoryReservation reserved_;
  uint64_t kept_bytes_ = 0;
  // Kept outputs whose bytes the response's `data` fields point at.
  std::vector<std::pair<v1::Tensor*, ResidentTensorPtr>> lent_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_CALL_TENSORS_H_
