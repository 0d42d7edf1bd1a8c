// The server's one memory budget (--memory_budget_bytes), shared by the two
// kinds of memory that requests make the server hold: the memory of the
// jobs admitted at once (request, outputs, workspace; the scheduler's
// admission) and the bytes of resident tensors (the tensor store, including
// uploads in progress). Each kind is an account; the budget caps their sum,
// and an account may have a cap of its own (--tensor_store_bytes).
//
//   MemoryBudget budget(/*budget_bytes=*/8 << 30);
//   ATTN_ASSIGN_OR_RETURN(MemoryReservation held,
//       budget.Reserve(MemoryBudget::kTensors, bytes, /*account_cap=*/0));
//   ...                     // `held` releases its bytes when destroyed.
//
// A reservation that does not fit is RESOURCE_EXHAUSTED at once, saying how
// much is held and how much is free. Thread-safe.
#ifndef ATTNSERVE_SERVER_MEMORY_BUDGET_H_
#define ATTNSERVE_SERVER_MEMORY_BUDGET_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace attnserve::server {

class MemoryReservation;

class MemoryBudget {
 public:
  enum Account { kRequests = 0, kTensors = 1 };

  // `budget_bytes` caps the sum of the accounts; 0 = unlimited.
  explicit MemoryBudget(uint64_t budget_bytes) : budget_(budget_bytes) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Adds `bytes` to `account` when they fit both the budget and
  // `account_cap` (0 = none); otherwise RESOURCE_EXHAUSTED. The messages
  // start "memory budget:" (the budget) or "tensor store:" (the cap of
  // kTensors) and say what is held and what is free.
  absl::Status TryReserve(Account account, uint64_t bytes,
                          uint64_t account_cap = 0);
  // The same, released by the returned object's destructor.
  absl::StatusOr<MemoryReservation> Reserve(Account account, uint64_t bytes,
                                            uint64_t account_cap = 0);
  // Gives back bytes that TryReserve added.
  void Release(Account account, uint64_t bytes);

  uint64_t budget_bytes() const { return budget_; }
  uint64_t used(Account account) const;
  uint64_t used() const;

 private:
  const uint64_t budget_;
  mutable absl::Mutex mu_;
  uint64_t used_[2] ABSL_GUARDED_BY(mu_) = {0, 0};
};

// Bytes held in a MemoryBudget account until destroyed (or released).
// Move-only.
class MemoryReservation {
 public:
  MemoryReservation() = default;
  MemoryReservation(MemoryBudget* budget, MemoryBudget::Account account,
                    uint64_t bytes)
      : budget_(budget), account_(account), bytes_(bytes) {}
  MemoryReservation(MemoryReservation&& other) noexcept {
    *this = std::move(other);
  }
  MemoryReservation& operator=(MemoryReservation&& other) noexcept {
    if (this != &other) {
      Reset();
      budget_ = std::exchange(other.budget_, nullptr);
      account_ = other.account_;
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~MemoryReservation() { Reset(); }

  uint64_t bytes() const { return bytes_; }

  // Moves `bytes` (at most bytes()) of this reservation into a new one, e.g.
  // the share of one stored tensor out of what a call reserved for all.
  MemoryReservation Split(uint64_t bytes) {
    bytes = bytes < bytes_ ? bytes : bytes_;
    bytes_ -= bytes;
    return MemoryReservation(budget_, account_, bytes);
  }

  // Gives the bytes back now.
  void Reset() {
    if (budget_ != nullptr && bytes_ > 0) budget_->Release(account_, bytes_);
    budget_ = nullptr;
    bytes_ = 0;
  }

 private:
  MemoryBudget* budget_ = nullptr;
  MemoryBudget::Account account_ = MemoryBudget::kRequests;
  uint64_t bytes_ = 0;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_MEMORY_BUDGET_H_
