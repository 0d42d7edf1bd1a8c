#ifndef ATTNSERVE_WIRE_HUGE_PAGES_H_
#define ATTNSERVE_WIRE_HUGE_PAGES_H_

#include <cstdint>

namespace attnserve::wire {

// Asks the kernel to back the 2 MiB-aligned interior of [data, data + size)
// with transparent huge pages, for a large buffer allocated but not yet
// written (a tensor about to be received). A fresh page costs a fault when
// it is first written, and huge pages take 512 times fewer of them; on
// virtual machines that is most of the cost of receiving into new memory.
// Advice only: does nothing for buffers under 4 MiB or where the kernel
// declines.
void AdviseHugePages(const void* data, uint64_t size);

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_HUGE_PAGES_H_
