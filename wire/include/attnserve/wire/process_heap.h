// The process's heap as tensors pass through it: how much memory the
// allocator has handed out and not yet got back, keeping what is freed for
// the next message, and giving back what it holds free. For the server and
// for client processes alike.
//
// HeapBytesInUse, unlike the resident set size, leaves out what the
// allocator keeps after a free (per-thread arenas, fragmentation), which
// depends on how many requests happened to be held at once: a leak grows it
// steadily, a burst of concurrent requests raises it only while they are
// held.
//
//   int main(int argc, char** argv) {
//     attnserve::wire::UseHugePagesForHeap(argv);  // first: may restart
//     attnserve::wire::KeepFreedHeap();  // before any thread
//     ...
//   }
//   const int64_t before = HeapBytesInUse();
//   ...  // serve some calls, wait until none is in flight
//   const int64_t grown = HeapBytesInUse() - before;  // ~0 without a leak
#ifndef ATTNSERVE_WIRE_PROCESS_HEAP_H_
#define ATTNSERVE_WIRE_PROCESS_HEAP_H_

#include <cstdint>
#include <optional>
#include <string>

namespace attnserve::wire {

// Bytes malloc has handed out and not yet got back (glibc: chunks in use in
// every arena plus mmap'ed ones; under AddressSanitizer, its allocator's
// count); -1 where the C library cannot tell.
// Thread-safe. It walks every arena under its lock, so it is meant for
// metrics scrapes, not hot paths.
int64_t HeapBytesInUse();

// Gives the memory malloc holds free back to the system (glibc: malloc_trim,
// which also releases whole free pages inside each arena, not only at its
// top). Freed memory that is used again costs a page fault per page, so call
// it when the process has been idle a while. Returns whether anything was
// released; false where the C library cannot (or a sanitizer's allocator
// is in place). Thread-safe; takes each arena's lock in turn.
bool ReleaseFreeHeap();

// Has malloc keep the memory calls free, in one heap, until
// ReleaseFreeHeap() gives it back (glibc: M_TRIM_THRESHOLD at its largest,
// M_MMAP_THRESHOLD 32 MiB and M_ARENA_MAX 1). gRPC receives every message into
// heap slices of 64 KiB; returned to the system after each call, the next
// call's slices are fresh pages again, each paying a page fault (on virtual
// machines several times the cost of a warm copy). One heap, because
// malloc_trim returns the free top of the main heap only: memory kept in
// per-thread heaps would stay after the process went idle. The server's
// trimmer calls ReleaseFreeHeap() once it is idle, so what is kept is bounded
// by the busiest moment and given back after it; attnctl and attnload keep
// it until they exit (downloads of large tensors run faster: see
// docs/performance.md). A client library does not call it: the process's main
// decides. Call first thing in main, before any thread starts; no-op where
// the C library has no such settings (or a sanitizer's allocator is in
// place).
void KeepFreedHeap();

// Has glibc's malloc back the heap with transparent huge pages (its
// glibc.malloc.hugetlb=1 tunable), so that memory the heap grows by costs a
// page fault per 2 MiB rather than per 4 KiB. A program's first calls grow
// the heap as gRPC receives their messages into slices of growing sizes;
// on virtual machines, where each page fault is expensive, those calls
// spent more time faulting than moving their bytes (docs/performance.md).
// glibc reads the tunable only when a program starts, so unless
// GLIBC_TUNABLES already names glibc.malloc.hugetlb (an operator's choice,
// e.g. =0, is kept), this runs the program again in the same process
// (execv of /proc/self/exe, same arguments) with the tunable added, and
// returns only if that is not needed or fails. Call first thing in main,
// before any thread starts or any output; no-op without glibc 2.35 or later
// or under a sanitizer's allocator.
void UseHugePagesForHeap(char** argv);

// Whether UseHugePagesForHeap takes effect in this build: glibc 2.35 or
// later, and glibc's own malloc rather than a sanitizer's allocator.
bool HugePageHeapSupported();

// GLIBC_TUNABLES with glibc.malloc.hugetlb=1 added to `tunables` (null when
// the variable is unset), or nullopt when it names that tunable already.
std::optional<std::string> TunablesWithHugePageHeap(const char* tunables);

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_PROCESS_HEAP_H_
