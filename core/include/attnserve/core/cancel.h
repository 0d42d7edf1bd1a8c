// Cooperative cancellation for running kernels.
//
// The server owns one token per request and calls Cancel() when the client
// goes away; kernels call Check() between tiles and stop with the returned
// status. A deadline, when set, turns into DEADLINE_EXCEEDED.
//
//   CancelToken token(absl::Now() + absl::Seconds(5));
//   ... in the kernel: ATTN_RETURN_IF_ERROR(token.Check());
//
// Thread-safe.
#ifndef ATTNSERVE_CORE_CANCEL_H_
#define ATTNSERVE_CORE_CANCEL_H_

#include <atomic>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace attnserve::core {

class CancelToken {
 public:
  CancelToken() = default;
  explicit CancelToken(absl::Time deadline) : deadline_(deadline) {}
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  absl::Time deadline() const { return deadline_; }

  // OK, CANCELLED or DEADLINE_EXCEEDED.
  absl::Status Check() const;

 private:
  std::atomic<bool> cancelled_{false};
  absl::Time deadline_ = absl::InfiniteFuture();
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_CANCEL_H_
