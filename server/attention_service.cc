#include "server/attention_service.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/status_macros.h"
#include "server/call_tracker.h"
#include "server/compute_call.h"
#include "server/proto_convert.h"
#include "server/request_log.h"
#include "server/status_mapping.h"

#ifndef ATTNSERVE_VERSION
#error "ATTNSERVE_VERSION must be defined by the build"
#endif

namespace attnserve::server {
namespace {

constexpr char kForwardOp[] = "FlashAttentionScore";
constexpr char kBackwardOp[] = "FlashAttentionScoreGrad";
constexpr char kNsaForwardOp[] = "NsaSelectedAttention";
constexpr char kNsaBackwardOp[] = "NsaSelectedAttentionGrad";

// What a job needs after planning, shared by the job's closures. The args
// view the request's bytes; the request outlives the job.
struct ForwardWork {
  core::ForwardArgs args;
  core::ForwardPlan plan;
};

struct BackwardWork {
  core::BackwardArgs args;
  core::BackwardPlan plan;
};

struct NsaForwardWork {
  core::NsaForwardArgs args;
  core::NsaForwardPlan plan;
};

struct NsaBackwardWork {
  core::NsaBackwardArgs args;
  core::NsaBackwardPlan plan;
};

// An immediate answer on the calling thread.
grpc::ServerUnaryReactor* FinishedReactor(grpc::CallbackServerContext* context,
                                          const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

void FillWorkspaceResponse(uint64_t workspace_bytes, double flops,
                           const std::vector<core::OutputSpec>& outputs,
                           v1::GetWorkspaceSizeResponse* response) {
  response->set_workspace_bytes(workspace_bytes);
  response->set_flops(flops);
  for (const core::OutputSpec& spec : outputs) {
    ToProto(spec, response->add_outputs());
  }
}

// Bytes of the planned outputs; saturates instead of overflowing (the
// response-size check rejects such plans first).
uint64_t OutputBytes(const std::vector<core::OutputSpec>& outputs) {
  uint64_t total = 0;
  for (const core::OutputSpec& spec : outputs) {
    uint64_t bytes = core::ItemSize(spec.dtype);
    for (int64_t dim : spec.shape) {
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes)) {
        return UINT64_MAX;
      }
    }
    if (__builtin_add_overflow(total, bytes, &total)) return UINT64_MAX;
  }
  return total;
}

// What admitting a planned job costs: FLOPs, and the memory it holds (the
// request as received, the outputs and the workspace).
template <typename Plan>
JobCost CostOf(const google::protobuf::Message& request, const Plan& plan) {
  JobCost cost;
  cost.flops = plan.flops;
  uint64_t bytes = request.ByteSizeLong();
  if (__builtin_add_overflow(bytes, OutputBytes(plan.outputs), &bytes) ||
      __builtin_add_overflow(bytes, plan.workspace_bytes, &bytes)) {
    bytes = UINT64_MAX;
  }
  cost.memory_bytes = bytes;
  return cost;
}

// The engine's share of ExecutionStats; the call fills in the timings.
void SetRunStats(const core::RunStats& stats, v1::ExecutionStats* out) {
  out->set_workspace_bytes(stats.workspace_bytes);
  out->set_flops(stats.flops);
}

}  // namespace

AttentionService::AttentionService(core::Engine* engine, Scheduler* scheduler,
                                   const ServiceConfig& config)
    : engine_(engine), scheduler_(scheduler), config_(config) {}

absl::Status AttentionService::CheckResponseSize(
    const std::vector<core::OutputSpec>& outputs) const {
  uint64_t total = 0;
  bool overflow = false;
  for (const core::OutputSpec& spec : outputs) {
    uint64_t bytes = core::ItemSize(spec.dtype);
    for (int64_t dim : spec.shape) {
      overflow = overflow || __builtin_mul_overflow(
                                 bytes, static_cast<uint64_t>(dim), &bytes);
    }
    overflow = overflow || __builtin_add_overflow(total, bytes, &total);
  }
  if (overflow || total > config_.max_message_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the response would carry ", overflow ? "more than 2^64" : "",
        overflow ? "" : absl::StrCat(total), " bytes of outputs, over the ",
        config_.max_message_bytes,
        "-byte message limit (--max_message_bytes)"));
  }
  return absl::OkStatus();
}

int AttentionService::ThreadsFor(double flops) const {
  const int most = std::max(1, config_.threads_per_request);
  if (config_.flops_per_thread <= 0) return most;
  const double wanted = std::ceil(flops / config_.flops_per_thread);
  return wanted >= most ? most : std::max(1, static_cast<int>(wanted));
}

grpc::ServerUnaryReactor* AttentionService::FlashAttentionScore(
    grpc::CallbackServerContext* context,
    const v1::FlashAttentionScoreRequest* request,
    v1::FlashAttentionScoreResponse* response) {
  ComputeCall* call =
      ComputeCall::Create(context, RecordOf(kForwardOp, *request));
  const absl::Time plan_start = absl::Now();
  auto work = std::make_shared<ForwardWork>();
  absl::Status status = [&]() -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(work->args, ToForwardArgs(*request));
    ATTN_ASSIGN_OR_RETURN(
        work->plan, core::PlanForward(work->args, config_.threads_per_request,
                                      engine_->bf16_tile_products()));
    if (const int threads = ThreadsFor(work->plan.flops);
        threads < work->plan.tiling.threads) {
      ATTN_ASSIGN_OR_RETURN(work->plan,
                            core::PlanForward(work->args, threads,
                                              engine_->bf16_tile_products()));
    }
    return CheckResponseSize(work->plan.outputs);
  }();
  if (!status.ok()) {
    call->FinishNow(status);
    return call;
  }
  core::Engine* engine = engine_;
  auto run = [engine, work,
              response](const core::CancelToken& token) -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(core::ForwardResult result,
                          engine->RunForward(work->args, work->plan, token));
    MoveToProto(std::move(result.attention_out),
                response->mutable_attention_out());
    MoveToProto(std::move(result.softmax_max), response->mutable_softmax_max());
    MoveToProto(std::move(result.softmax_sum), response->mutable_softmax_sum());
    SetRunStats(result.stats, response->mutable_stats());
    return absl::OkStatus();
  };
  call->Submit(scheduler_, CostOf(*request, work->plan),
               absl::Now() - plan_start, std::move(run),
               response->mutable_stats());
  return call;
}

grpc::ServerUnaryReactor* AttentionService::FlashAttentionScoreGrad(
    grpc::CallbackServerContext* context,
    const v1::FlashAttentionScoreGradRequest* request,
    v1::FlashAttentionScoreGradResponse* response) {
  ComputeCall* call =
      ComputeCall::Create(context, RecordOf(kBackwardOp, *request));
  const absl::Time plan_start = absl::Now();
  auto work = std::make_shared<BackwardWork>();
  absl::Status status = [&]() -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(work->args, ToBackwardArgs(*request));
    ATTN_ASSIGN_OR_RETURN(
        work->plan, core::PlanBackward(work->args, config_.threads_per_request,
                                       engine_->bf16_tile_products()));
    if (const int threads = ThreadsFor(work->plan.flops);
        threads < work->plan.tiling.threads) {
      ATTN_ASSIGN_OR_RETURN(work->plan,
                            core::PlanBackward(work->args, threads,
                                               engine_->bf16_tile_products()));
    }
    return CheckResponseSize(work->plan.outputs);
  }();
  if (!status.ok()) {
    call->FinishNow(status);
    return call;
  }
  core::Engine* engine = engine_;
  auto run = [engine, work,
              response](const core::CancelToken& token) -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(core::BackwardResult result,
                          engine->RunBackward(work->args, work->plan, token));
    MoveToProto(std::move(result.dq), response->mutable_dq());
    MoveToProto(std::move(result.dk), response->mutable_dk());
    MoveToProto(std::move(result.dv), response->mutable_dv());
    if (result.dpse.has_value()) {
      MoveToProto(std::move(*result.dpse), response->mutable_dpse());
    }
    SetRunStats(result.stats, response->mutable_stats());
    return absl::OkStatus();
  };
  call->Submit(scheduler_, CostOf(*request, work->plan),
               absl::Now() - plan_start, std::move(run),
               response->mutable_stats());
  return call;
}

grpc::ServerUnaryReactor* AttentionService::NsaSelectedAttention(
    grpc::CallbackServerContext* context,
    const v1::NsaSelectedAttentionRequest* request,
    v1::NsaSelectedAttentionResponse* response) {
  ComputeCall* call =
      ComputeCall::Create(context, RecordOf(kNsaForwardOp, *request));
  const absl::Time plan_start = absl::Now();
  auto work = std::make_shared<NsaForwardWork>();
  absl::Status status = [&]() -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(work->args, ToNsaForwardArgs(*request));
    ATTN_ASSIGN_OR_RETURN(
        work->plan,
        core::PlanNsaForward(work->args, config_.threads_per_request,
                             engine_->bf16_tile_products()));
    return CheckResponseSize(work->plan.outputs);
  }();
  if (!status.ok()) {
    call->FinishNow(status);
    return call;
  }
  core::Engine* engine = engine_;
  auto run = [engine, work,
              response](const core::CancelToken& token) -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(core::ForwardResult result,
                          engine->RunNsaForward(work->args, work->plan, token));
    MoveToProto(std::move(result.attention_out),
                response->mutable_attention_out());
    MoveToProto(std::move(result.softmax_max), response->mutable_softmax_max());
    MoveToProto(std::move(result.softmax_sum), response->mutable_softmax_sum());
    SetRunStats(result.stats, response->mutable_stats());
    return absl::OkStatus();
  };
  call->Submit(scheduler_, absl::Now() - plan_start, std::move(run),
               response->mutable_stats());
  return call;
}

grpc::ServerUnaryReactor* AttentionService::NsaSelectedAttentionGrad(
    grpc::CallbackServerContext* context,
    const v1::NsaSelectedAttentionGradRequest* request,
    v1::NsaSelectedAttentionGradResponse* response) {
  ComputeCall* call =
      ComputeCall::Create(context, RecordOf(kNsaBackwardOp, *request));
  const absl::Time plan_start = absl::Now();
  auto work = std::make_shared<NsaBackwardWork>();
  absl::Status status = [&]() -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(work->args, ToNsaBackwardArgs(*request));
    ATTN_ASSIGN_OR_RETURN(
        work->plan,
        core::PlanNsaBackward(work->args, config_.threads_per_request,
                              engine_->bf16_tile_products()));
    return CheckResponseSize(work->plan.outputs);
  }();
  if (!status.ok()) {
    call->FinishNow(status);
    return call;
  }
  core::Engine* engine = engine_;
  auto run = [engine, work,
              response](const core::CancelToken& token) -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(
        core::BackwardResult result,
        engine->RunNsaBackward(work->args, work->plan, token));
    MoveToProto(std::move(result.dq), response->mutable_dq());
    MoveToProto(std::move(result.dk), response->mutable_dk());
    MoveToProto(std::move(result.dv), response->mutable_dv());
    SetRunStats(result.stats, response->mutable_stats());
    return absl::OkStatus();
  };
  call->Submit(scheduler_, absl::Now() - plan_start, std::move(run),
               response->mutable_stats());
  return call;
}

grpc::ServerUnaryReactor* AttentionService::GetWorkspaceSize(
    grpc::CallbackServerContext* context,
    const v1::GetWorkspaceSizeRequest* request,
    v1::GetWorkspaceSizeResponse* response) {
  const int threads = config_.threads_per_request;
  RequestRecord record;
  absl::Status status;
  switch (request->op_case()) {
    case v1::GetWorkspaceSizeRequest::kFlashAttentionScore: {
      const auto& op = request->flash_attention_score();
      record = RecordOf("GetWorkspaceSize/FlashAttentionScore", op);
      status = [&]() -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(core::ForwardArgs args, ToForwardArgs(op));
        ATTN_ASSIGN_OR_RETURN(
            core::ForwardPlan plan,
            core::PlanForward(args, threads, engine_->bf16_tile_products()));
        FillWorkspaceResponse(plan.workspace_bytes, plan.flops, plan.outputs,
                              response);
        return absl::OkStatus();
      }();
      status = NestField(status, "flash_attention_score");
      break;
    }
    case v1::GetWorkspaceSizeRequest::kFlashAttentionScoreGrad: {
      const auto& op = request->flash_attention_score_grad();
      record = RecordOf("GetWorkspaceSize/FlashAttentionScoreGrad", op);
      status = [&]() -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(core::BackwardArgs args, ToBackwardArgs(op));
        ATTN_ASSIGN_OR_RETURN(
            core::BackwardPlan plan,
            core::PlanBackward(args, threads, engine_->bf16_tile_products()));
        FillWorkspaceResponse(plan.workspace_bytes, plan.flops, plan.outputs,
                              response);
        return absl::OkStatus();
      }();
      status = NestField(status, "flash_attention_score_grad");
      break;
    }
    case v1::GetWorkspaceSizeRequest::kNsaSelectedAttention: {
      const auto& op = request->nsa_selected_attention();
      record = RecordOf("GetWorkspaceSize/NsaSelectedAttention", op);
      status = [&]() -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(core::NsaForwardArgs args, ToNsaForwardArgs(op));
        ATTN_ASSIGN_OR_RETURN(
            core::NsaForwardPlan plan,
            core::PlanNsaForward(args, threads, engine_->bf16_tile_products()));
        FillWorkspaceResponse(plan.workspace_bytes, plan.flops, plan.outputs,
                              response);
        return absl::OkStatus();
      }();
      status = NestField(status, "nsa_selected_attention");
      break;
    }
    case v1::GetWorkspaceSizeRequest::kNsaSelectedAttentionGrad: {
      const auto& op = request->nsa_selected_attention_grad();
      record = RecordOf("GetWorkspaceSize/NsaSelectedAttentionGrad", op);
      status = [&]() -> absl::Status {
        ATTN_ASSIGN_OR_RETURN(core::NsaBackwardArgs args,
                              ToNsaBackwardArgs(op));
        ATTN_ASSIGN_OR_RETURN(
            core::NsaBackwardPlan plan,
            core::PlanNsaBackward(args, threads,
                                  engine_->bf16_tile_products()));
        FillWorkspaceResponse(plan.workspace_bytes, plan.flops, plan.outputs,
                              response);
        return absl::OkStatus();
      }();
      status = NestField(status, "nsa_selected_attention_grad");
      break;
    }
    case v1::GetWorkspaceSizeRequest::OP_NOT_SET:
      record.op = "GetWorkspaceSize";
      status = core::InvalidField(
          "op",
          "one of flash_attention_score, flash_attention_score_grad, "
          "nsa_selected_attention, nsa_selected_attention_grad must be set");
      break;
  }
  if (!status.ok()) response->Clear();
  record.request_id = RequestIdOf(*context);
  SetOutcome(status, &record);
  LogRequest(record);
  return FinishedReactor(context, status);
}

grpc::ServerUnaryReactor* AttentionService::GetServerInfo(
    grpc::CallbackServerContext* context,
    const v1::GetServerInfoRequest* /*request*/,
    v1::GetServerInfoResponse* response) {
  response->set_version(ATTNSERVE_VERSION);
  response->add_operators(kForwardOp);
  response->add_operators(kBackwardOp);
  response->add_operators(kNsaForwardOp);
  response->add_operators(kNsaBackwardOp);
  for (int value = v1::DataType_MIN; value <= v1::DataType_MAX; ++value) {
    if (value == v1::DATA_TYPE_UNSPECIFIED || !v1::DataType_IsValid(value)) {
      continue;
    }
    absl::StatusOr<core::DType> dtype = FromProtoDType(value, "dtype");
    // The compute dtypes, and FLOAT8 (gradient inputs).
    if (dtype.ok() && (core::IsFloatingCompute(*dtype) ||
                       *dtype == core::DType::kFloat8E4M3FN ||
                       *dtype == core::DType::kFloat8E5M2)) {
      response->add_dtypes(static_cast<v1::DataType>(value));
    }
  }
  for (const char* layout : {"BSH", "SBH", "BSND", "BNSD", "TND"}) {
    response->add_layouts(layout);
  }
  response->set_worker_count(scheduler_->workers());
  response->set_max_message_bytes(config_.max_message_bytes);
  response->set_queue_depth(scheduler_->queue_depth());
  response->set_memory_budget_bytes(engine_->workspace_pool().budget_bytes());
  for (const std::string& backend : engine_->backends()) {
    response->add_compute_backends(backend);
  }
  RequestRecord record;
  record.op = "GetServerInfo";
  record.request_id = RequestIdOf(*context);
  LogRequest(record);
  return FinishedReactor(context, absl::OkStatus());
}

}  // namespace attnserve::server
