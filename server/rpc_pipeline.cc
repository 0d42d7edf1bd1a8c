#include "server/rpc_pipeline.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/grpc_bytes.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/received_bytes.h"
#include "server/call_tracker.h"
#include "server/status_mapping.h"

namespace attnserve::server {
namespace {

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

}  // namespace

absl::Status DecodeRequest(const grpc::ByteBuffer& bytes,
                           core::BufferPool* pool,
                           std::vector<grpc::Slice>* received,
                           google::protobuf::Message* request,
                           wire::RequestPayloads* payloads) {
  const std::string& type = request->GetDescriptor()->full_name();
  wire::ReceivedBytes view;
  if (absl::Status read = wire::ReadSlices(bytes, received, &view);
      !read.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid ", type, ": ", read.message()));
  }
  wire::ReceivedPayloads ranges;
  const absl::Status status = wire::DecodeMessage(view, request, &ranges);
  if (!status.ok()) {
    // The field the decoder stopped at stays the BadRequest's field.
    const std::optional<std::string> field = core::FieldOf(status);
    if (!field.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a valid ", type, ": ", status.message()));
    }
    absl::string_view rule = status.message();
    absl::ConsumePrefix(&rule, absl::StrCat(*field, ": "));
    return core::InvalidField(*field,
                              absl::StrCat(rule, " (not a valid ", type, ")"));
  }
  *payloads = wire::RequestPayloads(std::move(view), std::move(ranges), pool);
  return absl::OkStatus();
}

absl::Status ParseRequest(const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  if (bytes.Valid() && bytes.Dump(&slices).ok()) {
    flat.reserve(bytes.Length());
    for (const grpc::Slice& slice : slices) {
      flat.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    if (request->ParseFromString(flat)) return absl::OkStatus();
  }
  request->Clear();
  return absl::InvalidArgumentError(absl::StrCat(
      "not a valid ", request->GetDescriptor()->full_name(),
      " (the request's bytes are not that message's protobuf encoding)"));
}

grpc::ByteBuffer EncodeResponse(const google::protobuf::Message& response,
                                const wire::OutgoingPayloads& payloads) {
  return wire::ToByteBuffer(wire::EncodeMessage(response, payloads));
}

JobCost CostOf(uint64_t request_bytes, double flops, uint64_t run_memory_bytes,
               uint64_t kept_bytes, uint64_t response_bytes) {
  const uint64_t held = SaturatingAdd(request_bytes, run_memory_bytes);
  const uint64_t memory =
      held == UINT64_MAX || kept_bytes > held ? held : held - kept_bytes;
  return JobCost{flops, memory, std::min(response_bytes, memory)};
}

void SetRunStats(const core::RunStats& stats, v1::ExecutionStats* out) {
  out->set_workspace_bytes(stats.workspace_bytes);
  out->set_flops(stats.flops);
}

absl::Status RpcPipeline::CheckResponseSize(uint64_t output_bytes) const {
  if (output_bytes <= config_.max_message_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("the response would carry ",
                   output_bytes == UINT64_MAX ? "at least 2^64 - 1"
                                              : absl::StrCat(output_bytes),
                   " bytes of outputs, over the ", config_.max_message_bytes,
                   "-byte message limit (--max_message_bytes)"));
}

grpc::ServerUnaryReactor* RpcPipeline::Finish(
    grpc::CallbackServerContext* context, RequestRecord record,
    const absl::Status& status) {
  record.request_id = RequestIdOf(*context);
  SetOutcome(status, &record);
  LogRequest(record);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace attnserve::server
