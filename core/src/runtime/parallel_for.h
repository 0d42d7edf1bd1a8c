// Intra-request parallelism: a fixed set of helper threads that join a
// caller's loop when they are free.
//
//   ComputePool pool(/*helpers=*/1);
//   pool.ParallelFor(items, /*max_workers=*/2, [&](int64_t item, int slot) {
//     ... slot in [0, max_workers) indexes per-thread scratch ...
//   });
//
// The caller always works on its own loop (slot 0), so a loop finishes even
// when every helper is busy with other requests; helpers that are free take
// items from the same atomic counter. Each item runs exactly once, on one
// thread, so results do not depend on how items were shared out. The first
// non-OK status stops the loop (items not yet started are skipped) and is
// returned. Thread-safe; loops from many callers may run at once.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_PARALLEL_FOR_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_PARALLEL_FOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace attnserve::core {

class ComputePool {
 public:
  explicit ComputePool(int helpers);
  ~ComputePool();
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  int helpers() const { return static_cast<int>(threads_.size()); }

  absl::Status ParallelFor(
      int64_t items, int max_workers,
      const std::function<absl::Status(int64_t item, int slot)>& fn);

 private:
  struct Loop;
  void HelperMain();
  static void Work(Loop& loop, int slot);

  absl::Mutex mu_;
  std::deque<std::shared_ptr<Loop>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_PARALLEL_FOR_H_
