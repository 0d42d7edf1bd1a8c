// A test seam for allocation failures: makes the Nth host-tensor allocation
// (MakeHostTensor: outputs, recomputed residuals, dpse) from now on throw
// std::bad_alloc, as a real out-of-memory would, so tests can check that
// every path survives it (the server answers RESOURCE_EXHAUSTED for that
// call and keeps serving).
//
//   FailNthHostAllocation(2);   // The second allocation from now fails.
//   ... run a call: it fails with std::bad_alloc inside ...
//   FailNthHostAllocation(0);   // Disarmed (the default).
//
// It replaces no global allocator (sanitizer builds keep theirs); disarmed it
// costs one relaxed atomic load per host tensor. Process-wide, thread-safe.
#ifndef ATTNSERVE_CORE_ALLOCATION_FAULTS_H_
#define ATTNSERVE_CORE_ALLOCATION_FAULTS_H_

#include <cstdint>

namespace attnserve::core {

// n >= 1: the nth host-tensor allocation from now throws std::bad_alloc
// (once). n <= 0: disarmed.
void FailNthHostAllocation(int64_t n);

// Host-tensor allocations counted since the process started (armed or not),
// so tests can see how many a call makes.
int64_t HostAllocationCount();

// Called before each host-tensor allocation; throws std::bad_alloc when the
// armed allocation is reached.
void CountHostAllocation();

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_ALLOCATION_FAULTS_H_
