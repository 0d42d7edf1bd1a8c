// The resident tensors of one compute call: the stored tensors its request
// names by handle, and what it keeps on the server after it ran
// (TensorRetention). The pipeline (rpc_pipeline.h) makes one per call and
// uses it at three points, the same for every operator:
//
//   CallTensors tensors(&store, guard.Owner(context), request.retention());
//   tensors.SetPayloads(&received, &outgoing);      // the byte-level path
//   ATTN_RETURN_IF_ERROR(tensors.CheckRetention());
//   ATTN_ASSIGN_OR_RETURN(Args args,
//                         Rpc::ToArgs(request, &tensors, &received));  // 1
//   ATTN_RETURN_IF_ERROR(tensors.ReserveKept(request, call.output_bytes()));
//   ... run ...
//   Rpc::Respond(std::move(result), &response, tensors);               // 2
//   tensors.KeepInputs(request);                                        // 3
//   tensors.FillHandles(response.mutable_handles());
//
// 1. Resolve(): a handle becomes a view of the stored bytes (no copy); the
//    tensor is held until this object goes away, so the bytes stay valid
//    even if the entry expires or is deleted meanwhile.
// 2. Put(): outputs go into the response (on the byte-level path as
//    payloads sent from the kernel's buffers), or, when kept, into the
//    store (no copy). Stored tensors hold core::Buffers (tensor_store.h): a
//    kept output that the response also carries is the same buffer, shared
//    by the store and the response's payload, so it is stored and sent
//    without a copy. With outputs_by_handle the response carries dtype,
//    shape and handle only.
// 3. With retention.keep, the inputs sent as data go into the store once
//    the run no longer reads them: on the byte-level path as the pooled
//    buffers their received bytes were copied to once (shared, no further
//    copy); a request message's own data is copied once.
//
// Keep the object until gRPC is done with the call (the pipeline holds it
// in the call's OnDone), so that outputs being sent stay held.
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
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/request_payloads.h"
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

  // The request's received payloads and the response's outgoing ones, on
  // the byte-level path (either may be null: the message holds the bytes).
  // Both must stay valid while the call uses this object.
  void SetPayloads(wire::RequestPayloads* received,
                   wire::OutgoingPayloads* outgoing);

  // INVALID_ARGUMENT for a ttl_seconds the store does not accept
  // ("retention.ttl_seconds").
  absl::Status CheckRetention();

  // Whether the outputs go back as handles only (not counted against the
  // message size).
  bool outputs_by_handle() const { return retention_.outputs_by_handle(); }
  // Whether the outputs go into the tensor store (keep or
  // outputs_by_handle), which then holds them and charges their bytes.
  bool outputs_stored() const {
    return retention_.keep() || retention_.outputs_by_handle();
  }

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

  // Stores the data of `request`'s tensor fields (keep only).
  void KeepInputs(const google::protobuf::Message& request);

  // Field name -> handle of every tensor of the call on the server: inputs
  // sent by handle, and what was kept.
  void FillHandles(google::protobuf::Map<std::string, std::string>* out) const;

 private:
  // Stores `tensor` (its share of the reservation attached) and records its
  // handle under `field`.
  std::string Keep(const std::string& field, ResidentTensorPtr tensor);

  TensorStore* const store_;
  const std::string owner_;
  const v1::TensorRetention retention_;
  absl::Duration ttl_;
  // Tensors the request names by handle, and kept outputs the response
  // sends, held for the call.
  std::vector<ResidentTensorPtr> held_;
  std::map<std::string, std::string> handles_;
  MemoryReservation reserved_;
  uint64_t kept_bytes_ = 0;
  wire::RequestPayloads* received_ = nullptr;
  wire::OutgoingPayloads* outgoing_ = nullptr;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_CALL_TENSORS_H_
