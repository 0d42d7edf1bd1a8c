#include "attnserve/core/cancel.h"

namespace attnserve::core {

absl::Status CancelToken::Check() const {
  if (cancelled()) return absl::CancelledError("request cancelled");
  if (deadline_ != absl::InfiniteFuture() && absl::Now() >= deadline_) {
    return absl::DeadlineExceededError("deadline passed during computation");
  }
  return absl::OkStatus();
}

}  // namespace attnserve::core
