#include "server/call_tracker.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <map>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "grpcpp/support/interceptor.h"

namespace attnserve::server {

// One per call: fixes the request id and counts the call while it lives.
class TrackingInterceptor final : public grpc::experimental::Interceptor {
 public:
  TrackingInterceptor(CallTracker* tracker, bool counted)
      : tracker_(tracker), counted_(counted) {
    if (counted_) tracker_->CallStarted();
  }
  ~TrackingInterceptor() override {
    if (counted_) tracker_->CallEnded();
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      AdoptRequestId(methods->GetRecvInitialMetadata());
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      std::multimap<std::string, std::string>* trailing =
          methods->GetSendTrailingMetadata();
      if (!id_.empty()) trailing->emplace(kRequestIdKey, id_);
      trailing->emplace(kInstanceKey, tracker_->instance_id());
    }
    methods->Proceed();
  }

 private:
  // Keeps a valid received id; otherwise replaces it with a new one. The
  // map holds string_refs: `id_` lives as long as the call.
  void AdoptRequestId(std::multimap<grpc::string_ref, grpc::string_ref>* map) {
    auto it = map->find(kRequestIdKey);
    if (it != map->end()) {
      const absl::string_view received(it->second.data(), it->second.size());
      if (IsValidRequestId(received)) {
        id_ = std::string(received);
        return;
      }
      map->erase(it);
    }
    id_ = NewRequestId();
    map->emplace(grpc::string_ref(kRequestIdKey), grpc::string_ref(id_));
  }

  CallTracker* const tracker_;
  const bool counted_;
  std::string id_;
};

namespace {

class TrackingFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit TrackingFactory(CallTracker* tracker) : tracker_(tracker) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    static const std::string prefix =
        absl::StrFormat("/%s/", v1::AttentionService::service_full_name());
    const bool counted =
        info->method() != nullptr && absl::StartsWith(info->method(), prefix);
    return new TrackingInterceptor(tracker_, counted);
  }

 private:
  CallTracker* const tracker_;
};

}  // namespace

bool IsValidRequestId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (const char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string NewRequestId() {
  thread_local absl::BitGen gen;
  const uint64_t hi = absl::Uniform<uint64_t>(gen);
  const uint64_t lo = absl::Uniform<uint64_t>(gen);
  return absl::StrFormat("%016x%016x", hi, lo);
}

std::string NewInstanceId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::snprintf(host, sizeof(host), "attnserve");
  }
  std::string id =
      absl::StrFormat("%s-%d-%s", host, getpid(), NewRequestId().substr(0, 8));
  // Metadata values are printable ASCII.
  for (char& c : id) {
    if (c < 0x21 || c > 0x7e) c = '_';
  }
  return id;
}

std::string RequestIdOf(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(kRequestIdKey);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
CallTracker::NewInterceptorFactory() {
  return std::make_unique<TrackingFactory>(this);
}

int CallTracker::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

bool CallTracker::WaitUntilIdle(absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  const auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_flight_ == 0;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

uint64_t CallTracker::calls_started() const {
  absl::MutexLock lock(&mu_);
  return calls_started_;
}

void CallTracker::CallStarted() {
  absl::MutexLock lock(&mu_);
  ++in_flight_;
  ++calls_started_;
}

void CallTracker::CallEnded() {
  absl::MutexLock lock(&mu_);
  --in_flight_;
}

}  // namespace attnserve::server
