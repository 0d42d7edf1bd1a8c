#include "server/heap_stats.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace attnserve::server {

int64_t HeapBytesInUse() {
#if defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
#else
  return -1;
#endif
}

}  // namespace attnserve::server
