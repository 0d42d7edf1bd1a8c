#include "server/attention_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "server/message_bytes.h"
#include "server/operator_rpcs.h"
#include "server/status_mapping.h"

#ifndef ATTNSERVE_VERSION
#error "ATTNSERVE_VERSION must be defined by the build"
#endif

namespace attnserve::server {
namespace {

constexpr char kGetWorkspaceSize[] = "GetWorkspaceSize";
constexpr char kGetServerInfo[] = "GetServerInfo";
constexpr char kDeleteTensor[] = "DeleteTensor";

// The member of GetWorkspaceSizeRequest.op numbered `op_case`.
const google::protobuf::FieldDescriptor* SizeField(int op_case) {
  return v1::GetWorkspaceSizeRequest::descriptor()->FindFieldByNumber(op_case);
}

// The operator request nested in `request`, which must hold Rpc's.
template <typename Rpc>
const typename Rpc::Request& NestedRequest(
    const v1::GetWorkspaceSizeRequest& request) {
  return static_cast<const typename Rpc::Request&>(
      request.GetReflection()->GetMessage(request, SizeField(Rpc::kSizeCase)));
}

// GetWorkspaceSize's log line names the nested operator and its shapes.
RequestRecord SizeRecord(const v1::GetWorkspaceSizeRequest& request) {
  RequestRecord record;
  record.op = kGetWorkspaceSize;
  OperatorRpcs::ForEach([&](auto rpc) {
    using Rpc = decltype(rpc);
    if (request.op_case() != Rpc::kSizeCase) return;
    record = RecordOf(absl::StrCat(kGetWorkspaceSize, "/", Rpc::kName),
                      NestedRequest<Rpc>(request));
  });
  return record;
}

absl::Status OpNotSet() {
  std::vector<std::string> names;
  OperatorRpcs::ForEach([&](auto rpc) {
    names.push_back(SizeField(decltype(rpc)::kSizeCase)->name());
  });
  return core::InvalidField(
      "op",
      absl::StrCat("one of ", absl::StrJoin(names, ", "), " must be set"));
}

}  // namespace

AttentionService::AttentionService(core::Engine* engine, Scheduler* scheduler,
                                   const CallGuard* guard, TensorStore* store,
                                   const PipelineConfig& config,
                                   const TensorRpcConfig& tensor_config)
    : engine_(engine),
      scheduler_(scheduler),
      guard_(guard),
      store_(store),
      config_(config),
      pipeline_(engine, scheduler, guard, store, config),
      tensor_rpcs_(guard, store, &engine->buffer_pool(), tensor_config) {
  ServeComputeMethodsAsStreams();
}

void AttentionService::ServeComputeMethodsAsStreams() {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::AttentionService::service_full_name());
  OperatorRpcs::ForEach([&](auto rpc) {
    using Rpc = decltype(rpc);
    // The generated service numbers its methods in the proto's order.
    MarkMethodStreamed(
        service->FindMethodByName(Rpc::kName)->index(),
        new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer,
                                                grpc::ByteBuffer>(
            [this](grpc::CallbackServerContext* context) {
              return pipeline_.Serve<Rpc>(context);
            }));
  });
}

grpc::ServerUnaryReactor* AttentionService::DeleteTensor(
    grpc::CallbackServerContext* context,
    const v1::DeleteTensorRequest* request,
    v1::DeleteTensorResponse* /*response*/) {
  RequestRecord record;
  record.op = kDeleteTensor;
  return pipeline_.Answer(context, kDeleteTensor, *request, std::move(record),
                          [&]() -> absl::Status {
                            // Deleting what is not there is not an error.
                            store_->Erase(guard_->Owner(*context),
                                          request->handle());
                            return absl::OkStatus();
                          });
}

grpc::ServerUnaryReactor* AttentionService::GetWorkspaceSize(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  v1::GetWorkspaceSizeRequest message;
  const absl::Status parsed = ParseRequest(*request, &message);
  v1::GetWorkspaceSizeResponse answer;
  // Answered synchronously: the reply is encoded before the call finishes.
  return AnswerWorkspaceSize(context, message, parsed, &answer, response);
}

grpc::ServerUnaryReactor* AttentionService::GetServerInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  v1::GetServerInfoRequest message;
  const absl::Status parsed = ParseRequest(*request, &message);
  v1::GetServerInfoResponse answer;
  return AnswerServerInfo(context, message, parsed, &answer, response);
}

grpc::ServerUnaryReactor* AttentionService::AnswerWorkspaceSize(
    grpc::CallbackServerContext* context,
    const v1::GetWorkspaceSizeRequest& message, const absl::Status& parsed,
    v1::GetWorkspaceSizeResponse* answer, grpc::ByteBuffer* out) {
  const v1::GetWorkspaceSizeRequest* request = &message;
  v1::GetWorkspaceSizeResponse* response = answer;
  return pipeline_.Answer(
      context, kGetWorkspaceSize, *request, SizeRecord(*request),
      [&]() -> absl::Status {
        ATTN_RETURN_IF_ERROR(parsed);
        absl::Status status = OpNotSet();
        OperatorRpcs::ForEach([&](auto rpc) {
          using Rpc = decltype(rpc);
          if (request->op_case() != Rpc::kSizeCase) return;
          status =
              NestField(pipeline_.Size<Rpc>(
                            *context, NestedRequest<Rpc>(*request), response),
                        SizeField(Rpc::kSizeCase)->name());
        });
        if (!status.ok()) return status;
        *out = EncodeResponse(*response, wire::OutgoingPayloads());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AttentionService::AnswerServerInfo(
    grpc::CallbackServerContext* context,
    const v1::GetServerInfoRequest& request, const absl::Status& parsed,
    v1::GetServerInfoResponse* response, grpc::ByteBuffer* out) {
  RequestRecord record;
  record.op = kGetServerInfo;
  return pipeline_.Answer(
      context, kGetServerInfo, request, std::move(record),
      [&]() -> absl::Status {
        ATTN_RETURN_IF_ERROR(parsed);
        response->set_version(ATTNSERVE_VERSION);
        OperatorRpcs::ForEach(
            [&](auto rpc) { response->add_operators(decltype(rpc)::kName); });
        for (int value = v1::DataType_MIN; value <= v1::DataType_MAX; ++value) {
          absl::StatusOr<core::DType> dtype = wire::ToCoreDType(value, "");
          // The compute dtypes, and FLOAT8 (gradient inputs).
          if (dtype.ok() && (core::IsFloatingCompute(*dtype) ||
                             *dtype == core::DType::kFloat8E4M3FN ||
                             *dtype == core::DType::kFloat8E5M2)) {
            response->add_dtypes(wire::ToWireDType(*dtype));
          }
        }
        for (const char* layout : {"BSH", "SBH", "BSND", "BNSD", "TND"}) {
          response->add_layouts(layout);
        }
        response->set_worker_count(scheduler_->workers());
        response->set_max_message_bytes(config_.max_message_bytes);
        response->set_queue_depth(scheduler_->queue_depth());
        response->set_memory_budget_bytes(
            engine_->workspace_pool().budget_bytes());
        for (const std::string& backend : engine_->backends()) {
          response->add_compute_backends(backend);
        }
        *out = EncodeResponse(*response, wire::OutgoingPayloads());
        return absl::OkStatus();
      });
}

}  // namespace attnserve::server
