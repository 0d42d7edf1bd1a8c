#include "runtime/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <new>

#include "absl/strings/str_cat.h"

namespace attnserve::core {

struct ComputePool::Loop {
  int64_t items = 0;
  int max_workers = 1;
  const std::function<absl::Status(int64_t, int)>* fn = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<int> next_slot{1};  // Slot 0 is the caller's.
  absl::Mutex mu;
  int active_helpers ABSL_GUARDED_BY(mu) = 0;
  absl::Status status ABSL_GUARDED_BY(mu);
  std::atomic<bool> failed{false};
};

ComputePool::ComputePool(int helpers) {
  for (int i = 0; i < helpers; ++i) {
    threads_.emplace_back([this] { HelperMain(); });
  }
}

ComputePool::~ComputePool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

namespace {

// One item; an exception (an allocation failing inside an item, on a helper
// thread or the caller's) becomes the loop's status instead of ending the
// process or leaving helpers running after the caller has unwound.
absl::Status RunItem(const std::function<absl::Status(int64_t, int)>& fn,
                     int64_t item, int slot) {
  try {
    return fn(item, slot);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "out of memory inside a compute item (allocation failed)");
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("compute item failed with an exception: ", e.what()));
  }
}

}  // namespace

void ComputePool::Work(Loop& loop, int slot) {
  for (;;) {
    const int64_t item = loop.next.fetch_add(1, std::memory_order_relaxed);
    if (item >= loop.items) break;
    absl::Status s = loop.failed.load(std::memory_order_relaxed)
                         ? absl::OkStatus()
                         : RunItem(*loop.fn, item, slot);
    if (!s.ok()) {
      absl::MutexLock lock(&loop.mu);
      if (loop.status.ok()) loop.status = s;
      loop.failed.store(true, std::memory_order_relaxed);
    }
  }
}

void ComputePool::HelperMain() {
  for (;;) {
    std::shared_ptr<Loop> loop;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ComputePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stop_ || !p->queue_.empty();
          },
          this));
      if (stop_) return;
      loop = queue_.front();
      queue_.pop_front();
    }
    const int slot = loop->next_slot.fetch_add(1);
    if (slot >= loop->max_workers) continue;
    {
      absl::MutexLock lock(&loop->mu);
      ++loop->active_helpers;
    }
    Work(*loop, slot);
    absl::MutexLock lock(&loop->mu);
    --loop->active_helpers;
  }
}

absl::Status ComputePool::ParallelFor(
    int64_t items, int max_workers,
    const std::function<absl::Status(int64_t, int)>& fn) {
  auto loop = std::make_shared<Loop>();
  loop->items = items;
  loop->max_workers = max_workers < 1 ? 1 : max_workers;
  loop->fn = &fn;
  const int wanted = std::min<int64_t>(loop->max_workers - 1, items - 1);
  if (wanted > 0 && !threads_.empty()) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < wanted && i < helpers(); ++i) queue_.push_back(loop);
  }
  Work(*loop, 0);
  // Every item has been taken; wait for helpers still running theirs. A
  // helper that picks the loop up later finds no item left and touches only
  // the shared Loop, which its reference keeps alive.
  absl::MutexLock lock(&loop->mu);
  loop->mu.Await(absl::Condition(
      +[](Loop* l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(l->mu) {
        return l->active_helpers == 0;
      },
      loop.get()));
  return loop->status;
}

}  // namespace attnserve::core
