#include "server/server.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/process_heap.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "server/header_token_check.h"
#include "server/startup_warnings.h"
#include "spdlog/spdlog.h"

namespace attnserve::server {
namespace {

int ResolveWorkers(int requested) {
  return requested > 0 ? requested : HardwareThreads();
}

// The contents of the file named by option `field`.
absl::StatusOr<std::string> ReadFileOption(const std::string& path,
                                           const std::string& field) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return core::InvalidField(
        field, absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) {
    return core::InvalidField(field, absl::StrCat(path, " is empty"));
  }
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const ServerOptions& options) {
  if (options.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ATTN_ASSIGN_OR_RETURN(pair.cert_chain,
                        ReadFileOption(options.tls_cert_file, "tls_cert"));
  ATTN_ASSIGN_OR_RETURN(pair.private_key,
                        ReadFileOption(options.tls_key_file, "tls_key"));
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca_file.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!options.tls_client_ca_file.empty()) {
    ATTN_ASSIGN_OR_RETURN(
        ssl.pem_root_certs,
        ReadFileOption(options.tls_client_ca_file, "tls_client_ca"));
  }
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(ssl);
}

// Serves gRPC server reflection on this server, or not. Linking gRPC's
// reflection library registers its plugin for every server the process
// builds; this option removes it where it is not wanted and adds it once
// where it is.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}

  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    const std::string name =
        grpc::reflection::ProtoServerReflectionPlugin().name();
    plugins->erase(
        std::remove_if(
            plugins->begin(), plugins->end(),
            [&](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
              return p->name() == name;
            }),
        plugins->end());
    if (enabled_) {
      plugins->push_back(
          std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
    }
  }

 private:
  const bool enabled_;
};

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  ATTN_RETURN_IF_ERROR(ValidateTransportLimits(options.transport));
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
  if (options.max_tensor_elements < 1) {
    return core::InvalidField(
        "max_tensor_elements",
        absl::StrCat("must be >= 1, got ", options.max_tensor_elements));
  }
  if (options.threads_per_request < 1) {
    return core::InvalidField(
        "threads_per_request",
        absl::StrCat("must be >= 1, got ", options.threads_per_request));
  }
  if (options.flops_per_thread < 0) {
    return core::InvalidField(
        "flops_per_thread",
        absl::StrCat("must be >= 0, got ", options.flops_per_thread));
  }
  if (options.bytes_per_thread < 0) {
    return core::InvalidField(
        "bytes_per_thread",
        absl::StrCat("must be >= 0, got ", options.bytes_per_thread));
  }
  if (options.small_request_flops < 0) {
    return core::InvalidField(
        "small_request_flops",
        absl::StrCat("must be >= 0, got ", options.small_request_flops));
  }
  if (options.large_request_workers < 0) {
    return core::InvalidField(
        "large_request_workers",
        absl::StrCat("must be >= 0, got ", options.large_request_workers));
  }
  if (options.drain_linger < absl::ZeroDuration()) {
    return core::InvalidField(
        "drain_linger",
        absl::StrCat("must be >= 0, got ",
                     absl::FormatDuration(options.drain_linger)));
  }
  if (options.drain_timeout < absl::ZeroDuration()) {
    return core::InvalidField(
        "drain_timeout",
        absl::StrCat("must be >= 0, got ",
                     absl::FormatDuration(options.drain_timeout)));
  }
  if (options.tensor_ttl <= absl::ZeroDuration() ||
      options.tensor_ttl > options.tensor_max_ttl) {
    return core::InvalidField(
        "tensor_ttl",
        absl::StrCat("must be > 0 and at most --tensor_max_ttl (",
                     absl::FormatDuration(options.tensor_max_ttl), "), got ",
                     absl::FormatDuration(options.tensor_ttl)));
  }
  if (options.tensor_max_ttl > absl::Seconds(UINT32_MAX)) {
    return core::InvalidField(
        "tensor_max_ttl",
        absl::StrCat("must be at most ", UINT32_MAX, "s, got ",
                     absl::FormatDuration(options.tensor_max_ttl)));
  }
  if (options.tensor_chunk_bytes < 1) {
    return core::InvalidField(
        "tensor_chunk_bytes",
        absl::StrCat("must be >= 1, got ", options.tensor_chunk_bytes));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return core::InvalidField(
        options.tls_cert_file.empty() ? "tls_cert" : "tls_key",
        "--tls_cert and --tls_key must be given together");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return core::InvalidField(
        "tls_client_ca",
        "mutual TLS needs the server's own --tls_cert and --tls_key");
  }
  return absl::OkStatus();
}

namespace {

// The engine's buffers: idle ones count against the memory budget's size.
core::BufferPoolOptions BufferOptions(const ServerOptions& options) {
  core::BufferPoolOptions buffers;
  buffers.max_idle_bytes = options.memory_budget_bytes;
  return buffers;
}

}  // namespace

Server::Server(const ServerOptions& options)
    : options_(options),
      engine_(core::EngineOptions{options.memory_budget_bytes,
                                  options.threads_per_request,
                                  options.bf16_tile_products},
              BufferOptions(options)),
      tracker_(options.instance_id.empty() ? NewInstanceId()
                                           : options.instance_id),
      budget_(options.memory_budget_bytes) {}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

int Server::workers() const {
  return scheduler_ == nullptr ? 0 : scheduler_->workers();
}

int Server::metrics_port() const {
  return metrics_endpoint_ == nullptr ? 0 : metrics_endpoint_->port();
}

absl::Status Server::Start() {
  ATTN_RETURN_IF_ERROR(ValidateServerOptions(options_));
  absl::MutexLock lock(&mu_);
  if (started_) return absl::FailedPreconditionError("server already started");

  ATTN_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeCredentials(options_));
  if (!options_.auth_token_file.empty()) {
    absl::StatusOr<TokenAuth> auth =
        TokenAuth::FromFile(options_.auth_token_file);
    if (!auth.ok()) {
      return core::InvalidField("auth_token_file", auth.status().message());
    }
    auth_ = std::make_shared<const TokenAuth>(*std::move(auth));
    if (!options_.tls_cert_file.empty()) {
      // Refused on their headers, before their bodies are read.
      credentials->SetAuthMetadataProcessor(
          std::make_shared<HeaderTokenCheck>(auth_));
    }
  }

  SchedulerOptions scheduling;
  scheduling.workers = ResolveWorkers(options_.workers);
  scheduling.queue_depth = options_.queue_depth;
  scheduling.small_job_cost = options_.small_request_flops;
  scheduling.large_job_workers = options_.large_request_workers;
  scheduling.memory_budget_bytes = options_.memory_budget_bytes;
  scheduling.budget = &budget_;
  scheduler_ = std::make_unique<Scheduler>(scheduling, options_.clock);
  guard_ = std::make_unique<CallGuard>(
      GuardOptions{auth_.get(), options_.max_tensor_elements});
  TensorStoreOptions storing;
  storing.capacity_bytes = options_.tensor_store_bytes;
  storing.default_ttl = options_.tensor_ttl;
  storing.max_ttl = options_.tensor_max_ttl;
  storing.evict = options_.tensor_store_evict;
  storing.clock = options_.clock;
  store_ = std::make_unique<TensorStore>(storing, &budget_);
  PipelineConfig pipeline;
  pipeline.threads =
      core::ThreadPolicy(options_.threads_per_request,
                         options_.flops_per_thread, options_.bytes_per_thread);
  pipeline.max_message_bytes =
      static_cast<uint64_t>(options_.max_message_bytes);
  TensorRpcConfig tensor_rpcs;
  tensor_rpcs.max_tensor_elements = options_.max_tensor_elements;
  // A GetTensor message carries its chunk and a few bytes of framing.
  constexpr int64_t kFraming = 64;
  tensor_rpcs.chunk_bytes = static_cast<uint64_t>(
      std::max<int64_t>(1, std::min(options_.tensor_chunk_bytes,
                                    options_.max_message_bytes - kFraming)));
  service_ = std::make_unique<AttentionService>(&engine_, scheduler_.get(),
                                                guard_.get(), store_.get(),
                                                pipeline, tensor_rpcs);

  if (!options_.metrics_listen.empty()) {
    MetricsSources sources;
    Scheduler* scheduler = scheduler_.get();
    core::WorkspacePool* pool = &engine_.workspace_pool();
    CallTracker* tracker = &tracker_;
    sources.in_flight_requests = [tracker] { return tracker->in_flight(); };
    sources.queue_depth = [scheduler] { return scheduler->queued(); };
    sources.queue_capacity = [scheduler] { return scheduler->queue_depth(); };
    sources.running_jobs = [scheduler] { return scheduler->running(); };
    sources.workspace_bytes_in_use = [pool] {
      return static_cast<double>(pool->in_use_bytes());
    };
    sources.workspace_bytes_reserved = [pool] {
      return static_cast<double>(pool->reserved_bytes());
    };
    sources.admitted_memory_bytes = [scheduler] {
      return static_cast<double>(scheduler->memory_in_use());
    };
    sources.memory_budget_bytes = [scheduler] {
      return static_cast<double>(scheduler->memory_budget_bytes());
    };
    sources.heap_bytes_in_use = [] {
      return static_cast<double>(wire::HeapBytesInUse());
    };
    TensorStore* store = store_.get();
    sources.tensor_store_bytes = [store] {
      return static_cast<double>(store->bytes());
    };
    sources.tensor_store_entries = [store] {
      return static_cast<double>(store->entries());
    };
    sources.tensor_store_capacity_bytes = [store] {
      return static_cast<double>(store->capacity_bytes());
    };
    sources.tensor_store_counters = [store] { return store->counters(); };
    metrics_ = std::make_unique<ServerMetrics>(std::move(sources));
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options_.metrics_listen, metrics_.get());
    if (!endpoint.ok()) {
      scheduler_->Shutdown();
      return endpoint.status();
    }
    metrics_endpoint_ = *std::move(endpoint);
    AddRequestObserver(metrics_.get());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // Reflection cannot check tokens: with token auth on it is not served, so
  // that the API's schema is no more open than the API itself.
  builder.SetOption(std::make_unique<ReflectionOption>(auth_ == nullptr));
  builder.AddListeningPort(options_.listen_address, credentials, &port_);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  ApplyTransportLimits(options_.transport, &builder);
  builder.RegisterService(service_.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(tracker_.NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    grpc_server_.reset();
    scheduler_->Shutdown();
    if (metrics_ != nullptr) RemoveRequestObserver(metrics_.get());
    metrics_endpoint_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen_address));
  }
  if (grpc::HealthCheckServiceInterface* health =
          grpc_server_->GetHealthCheckService()) {
    health->SetServingStatus(v1::AttentionService::service_full_name(), true);
  }
  core::BufferPool* buffers = &engine_.buffer_pool();
  trimmer_ = std::thread([this, buffers] {
    // The heap is given back like the pool's blocks: once no call has been
    // in flight for the pool's idle time (and once per such pause), so that
    // a busy server keeps its memory warm and an idle one shrinks.
    const absl::Duration idle_ttl = buffers->options().idle_ttl;
    uint64_t calls_seen = tracker_.calls_started();
    absl::Time last_busy = absl::Now();
    bool heap_released = false;
    while (!stop_trimming_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      buffers->TrimIdle();
      const uint64_t calls = tracker_.calls_started();
      if (calls != calls_seen || tracker_.in_flight() > 0) {
        calls_seen = calls;
        last_busy = absl::Now();
        heap_released = false;
      } else if (!heap_released && absl::Now() - last_busy >= idle_ttl) {
        wire::ReleaseFreeHeap();
        heap_released = true;
      }
    }
  });
  started_ = true;
  for (const std::string& warning : StartupWarnings(options_)) {
    spdlog::warn("{}", warning);
  }
  return absl::OkStatus();
}

void Server::Wait() {
  absl::MutexLock lock(&mu_);
  if (!started_) return;
  mu_.Await(absl::Condition(&shut_down_));
}

void Server::Shutdown(absl::Duration drain_timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (!started_) return;
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shut_down_));
      return;
    }
    shutting_down_ = true;
  }
  // 1. Stop taking work, but keep answering health checks (NOT_SERVING), so
  //    that load balancers see the change while calls drain.
  if (grpc::HealthCheckServiceInterface* health =
          grpc_server_->GetHealthCheckService()) {
    health->Shutdown();
  }
  guard_->StartDraining();
  // 2. Let the calls in flight finish, up to the drain timeout.
  const absl::Time drain_deadline = absl::Now() + drain_timeout;
  if (!tracker_.WaitUntilIdle(drain_deadline)) {
    spdlog::warn(
        "drain timeout: {} call(s) still in flight after {}; cancelling them",
        tracker_.in_flight(), absl::FormatDuration(drain_timeout));
    // Their jobs stop within a few tiles and the calls end CANCELLED;
    // uploads in progress free what they received.
    scheduler_->CancelAll();
    service_->CancelStreams();
    tracker_.WaitUntilIdle(absl::Now() + absl::Seconds(5));
  } else {
    // 3. Linger before closing. Compute calls and uploads are counted from
    //    their headers, but closing the port cuts the calls whose headers
    //    are still on their way (and the small RPCs, which gRPC hands over
    //    only with their message): their callers would see CANCELLED
    //    instead of UNAVAILABLE. A caller that sends its next call as soon
    //    as an answer arrives does exactly that when the last call of the
    //    drain ends; this gives such calls time to arrive and be refused,
    //    and the refusals time to reach their callers.
    const absl::Duration linger =
        std::min(options_.drain_linger, drain_deadline - absl::Now());
    if (linger > absl::ZeroDuration()) absl::SleepFor(linger);
    tracker_.WaitUntilIdle(drain_deadline);
  }
  // 4. Close the port; anything still open is cancelled by gRPC. Blocks
  //    until every call has finished.
  grpc_server_->Shutdown(absl::ToChronoTime(absl::Now()));
  scheduler_->Shutdown();
  grpc_server_->Wait();
  if (metrics_ != nullptr) RemoveRequestObserver(metrics_.get());
  metrics_endpoint_.reset();
  stop_trimming_.Notify();
  trimmer_.join();
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

}  // namespace attnserve::server
