// Bookkeeping that every RPC of the server passes through: the request id
// and the count of calls in flight. Installed as a gRPC server interceptor.
//
//   CallTracker tracker;
//   std::vector<std::unique_ptr<
//       grpc::experimental::ServerInterceptorFactoryInterface>> factories;
//   factories.push_back(tracker.NewInterceptorFactory());
//   builder.experimental().SetInterceptorCreators(std::move(factories));
//   ...
//   tracker.WaitUntilIdle(absl::Now() + absl::Seconds(30));  // drain
//
// Request id: a call's `x-request-id` metadata when it is 1 to 128 of
// [A-Za-z0-9._:-], otherwise a new random id (32 hex digits). The id is
// put into the call's client metadata, so RequestIdOf(context) finds it in
// the handler, and sent back in the trailing metadata as `x-request-id`.
//
// In flight: calls to attnserve.v1.AttentionService from their arrival until
// gRPC is done with them (queued, running, or being answered).
//
// Instance: every call's trailing metadata also carries
// `x-attnserve-instance`, the server instance's id (stable for the process
// and new for every start), so that clients and load balancers can tell
// which instance answered (resident tensors belong to one instance).
#ifndef ATTNSERVE_SERVER_CALL_TRACKER_H_
#define ATTNSERVE_SERVER_CALL_TRACKER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_interceptor.h"

namespace attnserve::server {

inline constexpr char kRequestIdKey[] = "x-request-id";
inline constexpr char kInstanceKey[] = "x-attnserve-instance";

// True when `id` may be used as a request id as received.
bool IsValidRequestId(absl::string_view id);

// A new random request id (32 lower-case hex digits). Thread-safe.
std::string NewRequestId();

// A new instance id: "<host>-<pid>-<8 random hex digits>". Thread-safe.
std::string NewInstanceId();

// The call's request id (set by the tracker's interceptor), or "" when the
// call carries none (a server built without the tracker).
std::string RequestIdOf(const grpc::ServerContextBase& context);

class CallTracker {
 public:
  // `instance_id` is sent with every call's trailing metadata.
  explicit CallTracker(std::string instance_id = NewInstanceId())
      : instance_id_(std::move(instance_id)) {}
  CallTracker(const CallTracker&) = delete;
  CallTracker& operator=(const CallTracker&) = delete;

  // An interceptor factory feeding this tracker; the tracker must outlive
  // the server it is installed in.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewInterceptorFactory();

  const std::string& instance_id() const { return instance_id_; }

  // AttentionService calls in flight. Thread-safe.
  int in_flight() const;
  // AttentionService calls started since the tracker was made (a count that
  // moves whenever there was work). Thread-safe.
  uint64_t calls_started() const;

  // Blocks until no AttentionService call is in flight or `deadline`
  // passes; true when idle. Thread-safe.
  bool WaitUntilIdle(absl::Time deadline) const;

 private:
  friend class TrackingInterceptor;
  void CallStarted();
  void CallEnded();

  const std::string instance_id_;
  mutable absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t calls_started_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_CALL_TRACKER_H_
