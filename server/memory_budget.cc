#include "server/memory_budget.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace attnserve::server {
namespace {

// "60 of 100 bytes are held by requests in flight", naming the resident
// tensors' share when there is one.
std::string Held(uint64_t requests, uint64_t tensors, uint64_t budget) {
  if (tensors == 0) {
    return absl::StrCat(requests, " of ", budget,
                        " bytes are held by requests in flight");
  }
  return absl::StrCat(requests + tensors, " of ", budget, " bytes are held (",
                      requests, " by requests in flight, ", tensors,
                      " by resident tensors)");
}

}  // namespace

absl::Status MemoryBudget::TryReserve(Account account, uint64_t bytes,
                                      uint64_t account_cap) {
  absl::MutexLock lock(&mu_);
  const uint64_t requests = used_[kRequests];
  const uint64_t tensors = used_[kTensors];
  const bool storing = account == kTensors;
  const std::string what =
      storing ? absl::StrCat("storing ", bytes, " bytes of tensors")
              : absl::StrCat("the request needs ", bytes, " bytes");
  if (storing && account_cap > 0 &&
      (bytes > account_cap || tensors > account_cap - bytes)) {
    const uint64_t free = tensors < account_cap ? account_cap - tensors : 0;
    return absl::ResourceExhaustedError(absl::StrCat(
        "tensor store: ", what, " does not fit: ", free, " of its ",
        account_cap,
        " bytes are free (--tensor_store_bytes); delete tensors "
        "(DeleteTensor), "
        "let them expire, or send the data with the call instead"));
  }
  if (budget_ > 0 && bytes > budget_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("memory budget: ", what,
                     storing ? "" : " (request, outputs and workspace)",
                     ", more than the whole budget of ", budget_,
                     " bytes (--memory_budget_bytes)"));
  }
  const uint64_t held = requests + tensors;
  if (budget_ > 0 && bytes > budget_ - std::min(held, budget_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory budget: ", what, " but ", Held(requests, tensors, budget_),
        ", ", held < budget_ ? budget_ - held : 0,
        " free (--memory_budget_bytes); retry later",
        storing ? " or delete tensors (DeleteTensor)" : ""));
  }
  used_[account] += bytes;
  return absl::OkStatus();
}

absl::StatusOr<MemoryReservation> MemoryBudget::Reserve(Account account,
                                                        uint64_t bytes,
                                                        uint64_t account_cap) {
  absl::Status status = TryReserve(account, bytes, account_cap);
  if (!status.ok()) return status;
  return MemoryReservation(this, account, bytes);
}

void MemoryBudget::Release(Account account, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_[account] -= std::min(bytes, used_[account]);
}

uint64_t MemoryBudget::used(Account account) const {
  absl::MutexLock lock(&mu_);
  return used_[account];
}

uint64_t MemoryBudget::used() const {
  absl::MutexLock lock(&mu_);
  return used_[kRequests] + used_[kTensors];
}

}  // namespace attnserve::server
