#include "runtime/scratch.h"

#include "absl/strings/str_cat.h"

namespace attnserve::core {

absl::Status Scratch::status() const {
  if (!overflow_) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("kernel workspace too small: its layout needs ", used_,
                   " bytes per worker, the region holds ", capacity_,
                   " (the plan and the run disagree)"));
}

}  // namespace attnserve::core
