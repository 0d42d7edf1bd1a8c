// How much memory the process's allocator has handed out and not yet got
// back. Unlike the resident set size it leaves out what the allocator keeps
// after a free (per-thread arenas, fragmentation), which depends on how many
// requests happened to be held at once: a leak grows it steadily, a burst of
// concurrent requests raises it only while they are held.
//
//   const int64_t before = HeapBytesInUse();
//   ...  // serve some calls, wait until none is in flight
//   const int64_t grown = HeapBytesInUse() - before;  // ~0 without a leak
#ifndef ATTNSERVE_SERVER_HEAP_STATS_H_
#define ATTNSERVE_SERVER_HEAP_STATS_H_

#include <cstdint>

namespace attnserve::server {

// Bytes malloc has handed out and not yet got back (glibc: chunks in use in
// every arena plus mmap'ed ones; under AddressSanitizer, its allocator's
// count); -1 where the C library cannot tell.
// Thread-safe. It walks every arena under its lock, so it is meant for
// metrics scrapes, not hot paths.
int64_t HeapBytesInUse();

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_HEAP_STATS_H_
