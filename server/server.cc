#include "server/server.h"

#include <climits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace attnserve::server {
namespace {

int ResolveWorkers(int requested) {
  if (requested > 0) return requested;
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (options.listen_address.empty()) {
    return core::InvalidField("listen_address", "must not be empty");
  }
  if (options.workers < 0) {
    return core::InvalidField(
        "workers", absl::StrCat("must be >= 0, got ", options.workers));
  }
  if (options.queue_depth < 1) {
    return core::InvalidField(
        "queue_depth", absl::StrCat("must be >= 1, got ", options.queue_depth));
  }
  if (options.max_message_bytes < 1 || options.max_message_bytes > INT_MAX) {
    return core::InvalidField(
        "max_message_bytes", absl::StrCat("must be in [1, ", INT_MAX, "], got ",
                                          options.max_message_bytes));
  }
  if (options.threads_per_request < 1) {
    return core::InvalidField(
        "threads_per_request",
        absl::StrCat("must be >= 1, got ", options.threads_per_request));
  }
  return absl::OkStatus();
}

Server::Server(const ServerOptions& options)
    : options_(options),
      engine_(core::EngineOptions{options.memory_budget_bytes,
                                  options.threads_per_request}) {}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

int Server::workers() const {
  return scheduler_ == nullptr ? 0 : scheduler_->workers();
}

absl::Status Server::Start() {
  ATTN_RETURN_IF_ERROR(ValidateServerOptions(options_));
  absl::MutexLock lock(&mu_);
  if (started_) return absl::FailedPreconditionError("server already started");

  scheduler_ = std::make_unique<Scheduler>(
      SchedulerOptions{ResolveWorkers(options_.workers), options_.queue_depth},
      options_.clock);
  ServiceConfig config;
  config.threads_per_request = options_.threads_per_request;
  config.max_message_bytes = static_cast<uint64_t>(options_.max_message_bytes);
  service_ =
      std::make_unique<AttentionService>(&engine_, scheduler_.get(), config);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address,
                           grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.RegisterService(service_.get());
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    grpc_server_.reset();
    scheduler_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen_address));
  }
  if (grpc::HealthCheckServiceInterface* health =
          grpc_server_->GetHealthCheckService()) {
    health->SetServingStatus(v1::AttentionService::service_full_name(), true);
  }
  started_ = true;
  return absl::OkStatus();
}

void Server::Wait() {
  absl::MutexLock lock(&mu_);
  if (!started_) return;
  mu_.Await(absl::Condition(&shut_down_));
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (!started_) return;
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shut_down_));
      return;
    }
    shutting_down_ = true;
  }
  if (grpc::HealthCheckServiceInterface* health =
          grpc_server_->GetHealthCheckService()) {
    health->Shutdown();
  }
  // Blocks until every call has finished; calls still running after the
  // grace period are cancelled, which stops their jobs through the token.
  grpc_server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  scheduler_->Shutdown();
  grpc_server_->Wait();
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

}  // namespace attnserve::server
