#include "server/rpc_pipeline.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "server/call_tracker.h"
#include "server/status_mapping.h"

namespace attnserve::server {
namespace {

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  uint64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}

}  // namespace

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
