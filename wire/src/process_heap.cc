#include "attnserve/wire/process_heap.h"

#include <unistd.h>

#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

// AddressSanitizer and ThreadSanitizer replace malloc.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ATTNSERVE_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ATTNSERVE_SANITIZER_ALLOCATOR 1
#endif
#endif

#if defined(ATTNSERVE_SANITIZER_ALLOCATOR)
#include <cstddef>
// Public sanitizer interface (sanitizer/allocator_interface.h, which not
// every compiler package installs).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#elif defined(__GLIBC__)
#include <malloc.h>
#endif

namespace attnserve::wire {

int64_t HeapBytesInUse() {
#if defined(ATTNSERVE_SANITIZER_ALLOCATOR)
  // The sanitizer's allocator; glibc's counters would stay still.
  return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes());
#elif defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
#else
  return -1;
#endif
}

bool ReleaseFreeHeap() {
#if defined(ATTNSERVE_SANITIZER_ALLOCATOR)
  return false;
#elif defined(__GLIBC__)
  return malloc_trim(0) != 0;
#else
  return false;
#endif
}

void KeepFreedHeap() {
#if !defined(ATTNSERVE_SANITIZER_ALLOCATOR) && defined(__GLIBC__)
  // The largest value glibc takes: the heap is not trimmed on free;
  // malloc_trim still releases everything free.
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  // Setting the trim threshold stops glibc from raising the mmap threshold
  // as large blocks are freed: blocks up to 32 MiB (its largest) come from
  // the kept heap, e.g. the slices gRPC receives a 4 MiB message into.
  // Tensors themselves live in the engine's pools.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_ARENA_MAX, 1);
#endif
}

namespace {
constexpr char kHugePageTunable[] = "glibc.malloc.hugetlb";
}  // namespace

std::optional<std::string> TunablesWithHugePageHeap(const char* tunables) {
  const std::string added = std::string(kHugePageTunable) + "=1";
  if (tunables == nullptr || *tunables == '\0') return added;
  // GLIBC_TUNABLES is name=value pairs joined by ':'.
  for (absl::string_view pair : absl::StrSplit(tunables, ':')) {
    if (absl::StartsWith(pair, std::string(kHugePageTunable) + "=")) {
      return std::nullopt;
    }
  }
  return std::string(tunables) + ":" + added;
}

// The tunable is glibc 2.35's; an older glibc would ignore it.
#if !defined(ATTNSERVE_SANITIZER_ALLOCATOR) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#define ATTNSERVE_HUGE_PAGE_HEAP 1
#endif

bool HugePageHeapSupported() {
#if defined(ATTNSERVE_HUGE_PAGE_HEAP)
  return true;
#else
  return false;
#endif
}

void UseHugePagesForHeap(char** argv) {
#if defined(ATTNSERVE_HUGE_PAGE_HEAP)
  const std::optional<std::string> tunables =
      TunablesWithHugePageHeap(std::getenv("GLIBC_TUNABLES"));
  if (!tunables.has_value()) return;
  if (setenv("GLIBC_TUNABLES", tunables->c_str(), /*overwrite=*/1) != 0) {
    return;
  }
  execv("/proc/self/exe", argv);
  // Still here: the program runs on with the heap it has. The variable
  // stays set, so programs it starts get huge pages, and a second call
  // does not try again.
#else
  (void)argv;
#endif
}

}  // namespace attnserve::wire
