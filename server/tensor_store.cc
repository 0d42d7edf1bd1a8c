#include "server/tensor_store.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "openssl/rand.h"

namespace attnserve::server {
namespace {

// 128 bits from the operating system's cryptographic generator, as 32
// lower-case hex digits.
std::string NewHandle() {
  unsigned char bits[16];
  if (RAND_bytes(bits, sizeof(bits)) != 1) {
    // OpenSSL's generator is seeded from the kernel; it fails only when the
    // kernel cannot supply entropy, where no handle would be safe.
    std::abort();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bits), sizeof(bits)));
}

}  // namespace

TensorStore::TensorStore(const TensorStoreOptions& options,
                         MemoryBudget* budget)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      budget_(budget) {
  if (options_.expiry_thread) {
    expiry_thread_ = std::thread([this] { ExpiryLoop(); });
  }
}

TensorStore::~TensorStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
}

absl::StatusOr<absl::Duration> TensorStore::TtlFor(
    std::optional<uint32_t> ttl_seconds, const std::string& field) const {
  if (!ttl_seconds.has_value()) return options_.default_ttl;
  const absl::Duration ttl = absl::Seconds(*ttl_seconds);
  if (*ttl_seconds == 0) {
    return core::InvalidField(
        field, "must be at least 1 (leave it unset for the server's default)");
  }
  if (ttl > options_.max_ttl) {
    return core::InvalidField(
        field, absl::StrCat(*ttl_seconds, " exceeds the server's maximum of ",
                            absl::ToInt64Seconds(options_.max_ttl),
                            " seconds (--tensor_max_ttl)"));
  }
  return ttl;
}

absl::StatusOr<MemoryReservation> TensorStore::Reserve(uint64_t bytes) {
  while (true) {
    absl::StatusOr<MemoryReservation> reserved = budget_->Reserve(
        MemoryBudget::kTensors, bytes, options_.capacity_bytes);
    if (reserved.ok() || !options_.evict || !EvictOne()) return reserved;
  }
}

std::string TensorStore::Insert(const std::string& owner,
                                ResidentTensorPtr tensor, absl::Duration ttl,
                                Via via) {
  std::string handle = NewHandle();
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    const absl::Time expires = now + ttl;
    entries_[handle] = Entry{owner, std::move(tensor), ttl, expires, now};
    if (expires < next_expiry_) {
      next_expiry_ = expires;
      wake_.Signal();
    }
  }
  (via == kViaPut ? puts_ : kept_).fetch_add(1);
  return handle;
}

absl::StatusOr<ResidentTensorPtr> TensorStore::Find(const std::string& owner,
                                                    const std::string& handle,
                                                    const std::string& field,
                                                    Use use) {
  {
    absl::MutexLock lock(&mu_);
    const auto it = entries_.find(handle);
    const absl::Time now = clock_->Now();
    if (it != entries_.end() && it->second.owner == owner &&
        it->second.expires > now) {
      Entry& entry = it->second;
      entry.last_used = now;
      entry.expires = now + entry.ttl;
      (use == kUseCompute ? uses_ : gets_).fetch_add(1);
      return entry.tensor;
    }
  }
  not_found_.fetch_add(1);
  return absl::NotFoundError(absl::StrCat(
      field, ": this server holds no tensor with handle \"",
      absl::CHexEscape(handle.substr(0, 64)),
      "\" for this caller (never stored, expired, deleted, kept by another "
      "server instance, or stored with other credentials); send the data "
      "instead"));
}

bool TensorStore::Erase(const std::string& owner, const std::string& handle) {
  ResidentTensorPtr victim;
  {
    absl::MutexLock lock(&mu_);
    const auto it = entries_.find(handle);
    if (it == entries_.end() || it->second.owner != owner) return false;
    victim = std::move(it->second.tensor);
    entries_.erase(it);
  }
  deletes_.fetch_add(1);
  return true;  // `victim` is freed here, outside the lock.
}

bool TensorStore::EvictOne() {
  ResidentTensorPtr victim;
  {
    absl::MutexLock lock(&mu_);
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      // An entry a running call holds would not free its bytes now.
      if (it->second.tensor.use_count() > 1) continue;
      if (oldest == entries_.end() ||
          it->second.last_used < oldest->second.last_used) {
        oldest = it;
      }
    }
    if (oldest == entries_.end()) return false;
    victim = std::move(oldest->second.tensor);
    entries_.erase(oldest);
  }
  evictions_.fetch_add(1);
  return true;
}

std::vector<ResidentTensorPtr> TensorStore::TakeExpiredLocked(absl::Time now) {
  std::vector<ResidentTensorPtr> victims;
  next_expiry_ = absl::InfiniteFuture();
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.expires <= now) {
      victims.push_back(std::move(it->second.tensor));
      entries_.erase(it++);
    } else {
      next_expiry_ = std::min(next_expiry_, it->second.expires);
      ++it;
    }
  }
  expiries_.fetch_add(victims.size());
  return victims;
}

int TensorStore::SweepExpired() {
  std::vector<ResidentTensorPtr> victims;
  {
    absl::MutexLock lock(&mu_);
    victims = TakeExpiredLocked(clock_->Now());
  }
  return static_cast<int>(victims.size());  // Freed here, outside the lock.
}

void TensorStore::ExpiryLoop() {
  mu_.Lock();
  while (!stopping_) {
    const absl::Time now = clock_->Now();
    if (next_expiry_ <= now) {
      std::vector<ResidentTensorPtr> victims = TakeExpiredLocked(now);
      // Free the bytes without holding the lock (large buffers take a
      // while to unmap).
      mu_.Unlock();
      victims.clear();
      mu_.Lock();
      continue;
    }
    // Wait for the next expiry; at most a second, so that a clock that is
    // not the wall clock is followed too.
    const absl::Duration wait = std::min(next_expiry_ - now, absl::Seconds(1));
    wake_.WaitWithTimeout(&mu_, std::max(wait, absl::Milliseconds(1)));
  }
  mu_.Unlock();
}

int64_t TensorStore::entries() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(entries_.size());
}

TensorStoreCounters TensorStore::counters() const {
  TensorStoreCounters c;
  c.puts = puts_.load();
  c.kept = kept_.load();
  c.gets = gets_.load();
  c.uses = uses_.load();
  c.deletes = deletes_.load();
  c.expiries = expiries_.load();
  c.evictions = evictions_.load();
  c.not_found = not_found_.load();
  return c;
}

}  // namespace attnserve::server
