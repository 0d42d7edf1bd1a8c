// ThreadSanitizer builds only (ATTNSERVE_THREAD_SANITIZE): tells
// ThreadSanitizer what abseil's Mutex, CondVar and Notification order.
//
// Debian's abseil is a shared library built without ThreadSanitizer, and
// absl::Mutex is not a pthread mutex (it waits on futexes itself), so
// ThreadSanitizer sees none of its locking: every access under one of our
// mutexes would be reported as a race. Linked into each test binary, this
// file defines the public locking methods itself; an executable's
// definitions take precedence over a shared library's, for our calls and
// for abseil's (and gRPC's) calls between its own functions alike. Each
// calls abseil's own method (dlsym RTLD_NEXT) and marks the mutex's address
// as a release point before the lock is given up and an acquire point after
// it is taken: happens-before edges, without lock-order checking.
//
// One order it cannot express: absl::Mutex evaluates a Condition (of
// LockWhen, Await) while the mutex is held, but on whichever thread holds
// it, and gives the mutex up inside abseil, where no release point can be
// marked. So Condition::Eval is defined here too, and ThreadSanitizer
// ignores the accesses of the condition's function (reads, by abseil's
// contract, of what the mutex guards): races inside a Condition's predicate
// go unreported, every other access is checked.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

// ThreadSanitizer's runtime has these, its header does not declare them.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* fn = dlsym(RTLD_NEXT, mangled);
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_sync_tsan: no %s in abseil\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

void Acquire(const void* address) {
  __tsan_acquire(const_cast<void*>(address));
}
void Release(const void* address) {
  __tsan_release(const_cast<void*>(address));
}

// The Notification's flag, which its inline HasBeenNotified() reads with
// acquire order in our (instrumented) code: it follows the mutex.
const void* FlagOf(const absl::Notification* n) {
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

}  // namespace

// The mangled names are those of Debian 12's abseil (inline namespace
// debian3); Real() aborts at the first call if they do not resolve.
#define ATTN_REAL(type, mangled)                \
  static const auto real = Real<type>(mangled); \
  (void)0

namespace absl {
ABSL_NAMESPACE_BEGIN

bool Condition::Eval() const {
  ATTN_REAL(bool (*)(const Condition*), "_ZNK4absl7debian39Condition4EvalEv");
  __tsan_ignore_thread_begin();
  const bool met = real(this);
  __tsan_ignore_thread_end();
  return met;
}

void Mutex::Lock() {
  ATTN_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  Acquire(this);
}

void Mutex::ReaderLock() {
  ATTN_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  ATTN_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  ATTN_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

void Mutex::Unlock() {
  ATTN_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  Release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  ATTN_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  ATTN_REAL(void (*)(Mutex*, const Condition&),
            "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  real(this, cond);
  Acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  ATTN_REAL(void (*)(Mutex*, const Condition&),
            "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  real(this, cond);
  Acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Duration),
            "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_"
            "9ConditionENS0_8DurationE");
  const bool met = real(this, cond, timeout);
  Acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Duration),
            "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_"
            "9ConditionENS0_8DurationE");
  const bool met = real(this, cond, timeout);
  Acquire(this);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Time),
            "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_"
            "9ConditionENS0_4TimeE");
  const bool met = real(this, cond, deadline);
  Acquire(this);
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Time),
            "_ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_"
            "9ConditionENS0_4TimeE");
  const bool met = real(this, cond, deadline);
  Acquire(this);
  return met;
}

void Mutex::Await(const Condition& cond) {
  ATTN_REAL(void (*)(Mutex*, const Condition&),
            "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  real(this, cond);
  Acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Duration),
            "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_"
            "8DurationE");
  Release(this);
  const bool met = real(this, cond, timeout);
  Acquire(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  ATTN_REAL(bool (*)(Mutex*, const Condition&, Time),
            "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_"
            "4TimeE");
  Release(this);
  const bool met = real(this, cond, deadline);
  Acquire(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  ATTN_REAL(void (*)(CondVar*, Mutex*),
            "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  ATTN_REAL(bool (*)(CondVar*, Mutex*, Duration),
            "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_"
            "8DurationE");
  Release(mu);
  const bool timed_out = real(this, mu, timeout);
  Acquire(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  ATTN_REAL(bool (*)(CondVar*, Mutex*, Time),
            "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_"
            "4TimeE");
  Release(mu);
  const bool timed_out = real(this, mu, deadline);
  Acquire(mu);
  return timed_out;
}

void Notification::Notify() {
  ATTN_REAL(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  Release(this);
  Release(FlagOf(this));
  real(this);
}

void Notification::WaitForNotification() const {
  ATTN_REAL(void (*)(const Notification*),
            "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  Acquire(this);
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  ATTN_REAL(bool (*)(const Notification*, Duration),
            "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutE"
            "NS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) Acquire(this);
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  ATTN_REAL(bool (*)(const Notification*, Time),
            "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadline"
            "ENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
