// The tensors kept on the server between calls (resident tensors), named by
// handles: uploaded with PutTensor, or kept by a compute call's
// TensorRetention.
//
//   TensorStore store(TensorStoreOptions{}, &budget);
//   ATTN_ASSIGN_OR_RETURN(MemoryReservation memory, store.Reserve(bytes));
//   auto tensor = std::make_shared<ResidentTensor>(dtype, shape, bytes);
//   tensor->memory = std::move(memory);
//   std::string handle = store.Insert(owner, std::move(tensor), ttl,
//                                     TensorStore::kViaPut);
//   ATTN_ASSIGN_OR_RETURN(ResidentTensorPtr t,
//                         store.Find(owner, handle, "key.handle"));
//
// - Handles are 32 hex digits from 128 bits of the operating system's
//   cryptographic random generator, so they cannot be guessed.
// - Every entry belongs to an owner (the caller's credentials, see
//   CallGuard::Owner); another owner is answered exactly as for a handle
//   that never existed (NOT_FOUND).
// - Every entry has a time to live, refreshed by every use (Find). A thread
//   of the store frees expired entries when they expire, not only when space
//   is needed.
// - The bytes count against the server's MemoryBudget (account kTensors) and
//   the store's own cap, from the moment they are reserved (an upload's
//   declared size, before its bytes arrive) until the last holder of the
//   tensor lets go of it: an entry deleted while a running call reads it is
//   freed when that call ends.
// - With eviction on, a reservation that does not fit frees the least
//   recently used entries that no call is using until it fits; otherwise it
//   is RESOURCE_EXHAUSTED.
//
// Thread-safe.
#ifndef ATTNSERVE_SERVER_TENSOR_STORE_H_
#define ATTNSERVE_SERVER_TENSOR_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attnserve/core/buffer.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/tensor.h"
#include "server/clock.h"
#include "server/memory_budget.h"

namespace attnserve::server {

// One tensor kept on the server: dtype, shape and its bytes, owned. The
// bytes never change once the tensor is stored, so any number of calls may
// read them at once (the kernels read them in place through view()).
//
// The bytes are a core::Buffer (attnserve/core/buffer.h), so that they are
// shared, not copied: a compute call's output kept on the server is the
// buffer the kernel wrote, also sent in the response (Share()); an input
// kept by retention is the pooled buffer its received bytes were copied to
// once; an upload is assembled in a buffer of its declared size. Only a
// tensor whose block is more than twice its size is copied (see the
// constructor). A share keeps the bytes alive after the entry is deleted or
// expires.
class ResidentTensor {
 public:
  // Holds `bytes` themselves, unless their block is more than twice their
  // size (an idle pooled block reused for a smaller tensor): then a copy of
  // the right size, so that what the store pins is never more than twice
  // what it accounts for.
  ResidentTensor(core::DType dtype, std::vector<int64_t> shape,
                 core::Buffer bytes)
      : dtype_(dtype),
        shape_(std::move(shape)),
        bytes_(bytes.capacity() / 2 > bytes.size()
                   ? core::Buffer(bytes.data(), bytes.size())
                   : std::move(bytes)) {}
  ResidentTensor(const ResidentTensor&) = delete;
  ResidentTensor& operator=(const ResidentTensor&) = delete;

  core::DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  core::TensorView view() const {
    return core::TensorView{dtype_, shape_, bytes_.data(), bytes_.size()};
  }

  // Another owner of the bytes (no copy), e.g. for a response to send from.
  // Nothing may write through it: the stored tensor is immutable.
  core::Buffer Share() const { return bytes_.Share(); }

  // The bytes' share of the memory budget, given back when the tensor is
  // destroyed.
  MemoryReservation memory;

 private:
  const core::DType dtype_;
  const std::vector<int64_t> shape_;
  const core::Buffer bytes_;
};

using ResidentTensorPtr = std::shared_ptr<ResidentTensor>;

struct TensorStoreOptions {
  // Cap of the store's own (--tensor_store_bytes); 0 = the memory budget
  // only.
  uint64_t capacity_bytes = 0;
  // Time to live of an entry stored without ttl_seconds (--tensor_ttl).
  absl::Duration default_ttl = absl::Minutes(10);
  // Longest ttl_seconds accepted (--tensor_max_ttl).
  absl::Duration max_ttl = absl::Hours(1);
  // Free least recently used entries when a new one would not fit
  // (--tensor_store_evict), instead of refusing it.
  bool evict = false;
  // Time source of the TTLs; null = the wall clock. Must outlive the store.
  Clock* clock = nullptr;
  // Run the thread that frees expired entries (tests with a fake clock call
  // SweepExpired() instead).
  bool expiry_thread = true;
};

// Counts since start, for the metrics.
struct TensorStoreCounters {
  uint64_t puts = 0;       // entries stored by PutTensor
  uint64_t kept = 0;       // entries stored by a call's retention
  uint64_t gets = 0;       // GetTensor downloads started
  uint64_t uses = 0;       // handles resolved by compute calls
  uint64_t deletes = 0;    // entries removed by DeleteTensor
  uint64_t expiries = 0;   // entries freed because their TTL passed
  uint64_t evictions = 0;  // entries freed to make room (evict on)
  uint64_t not_found = 0;  // lookups of handles not held for the caller
};

class TensorStore {
 public:
  enum Via { kViaPut, kViaRetention };
  enum Use { kUseCompute, kUseGet };

  // `budget` must outlive the store.
  TensorStore(const TensorStoreOptions& options, MemoryBudget* budget);
  // Stops the expiry thread; frees every entry not held elsewhere.
  ~TensorStore();
  TensorStore(const TensorStore&) = delete;
  TensorStore& operator=(const TensorStore&) = delete;

  // The time to live a request asks for: `ttl_seconds` (1 to max_ttl) or the
  // default when unset. INVALID_ARGUMENT naming `field` otherwise.
  absl::StatusOr<absl::Duration> TtlFor(std::optional<uint32_t> ttl_seconds,
                                        const std::string& field) const;

  // Reserves `bytes` for tensors about to be stored (an upload's declared
  // size, a call's kept tensors); RESOURCE_EXHAUSTED saying how much is free
  // when they do not fit (after evicting, when eviction is on).
  absl::StatusOr<MemoryReservation> Reserve(uint64_t bytes);

  // Stores `tensor` for `owner` (its `memory` should hold its bytes) and
  // returns its new handle.
  std::string Insert(const std::string& owner, ResidentTensorPtr tensor,
                     absl::Duration ttl, Via via);

  // The tensor `handle` of `owner`, its time to live refreshed; NOT_FOUND
  // "<field>: ..." when the store holds no such tensor for this owner
  // (unknown, expired, deleted or another owner's: one answer for all).
  absl::StatusOr<ResidentTensorPtr> Find(const std::string& owner,
                                         const std::string& handle,
                                         const std::string& field, Use use);

  // Removes the entry; false when there was none for this owner.
  bool Erase(const std::string& owner, const std::string& handle);

  // Frees every entry whose time has passed; returns how many.
  int SweepExpired();

  // Bytes held for resident tensors (stored, being uploaded, or deleted but
  // still read by a running call), and entries stored.
  uint64_t bytes() const { return budget_->used(MemoryBudget::kTensors); }
  int64_t entries() const;
  uint64_t capacity_bytes() const { return options_.capacity_bytes; }
  TensorStoreCounters counters() const;
  const TensorStoreOptions& options() const { return options_; }

 private:
  struct Entry {
    std::string owner;
    ResidentTensorPtr tensor;
    absl::Duration ttl;
    absl::Time expires;
    absl::Time last_used;
  };

  // Frees one least recently used entry that nothing else holds; false when
  // there is none.
  bool EvictOne();
  // Removes the expired entries and recomputes next_expiry_; the caller
  // frees what it returns after unlocking.
  std::vector<ResidentTensorPtr> TakeExpiredLocked(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpiryLoop();

  const TensorStoreOptions options_;
  Clock* const clock_;
  MemoryBudget* const budget_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Earliest expiry the expiry thread is waiting for.
  absl::Time next_expiry_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar wake_;

  std::atomic<uint64_t> puts_{0}, kept_{0}, gets_{0}, uses_{0}, deletes_{0},
      expiries_{0}, evictions_{0}, not_found_{0};
  std::thread expiry_thread_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_TENSOR_STORE_H_
