#include "mapped_block.h"

#include <sys/mman.h>

namespace attnserve::core {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kSmallGranule = size_t{64} << 10;

}  // namespace

size_t MappedBlockCapacity(size_t size) {
  const size_t granule = size >= kHugePage ? kHugePage : kSmallGranule;
  return (size + granule - 1) / granule * granule;
}

char* MapBlock(size_t capacity) {
  void* data = mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) return nullptr;
  if (capacity >= kHugePage) madvise(data, capacity, MADV_HUGEPAGE);
  return static_cast<char*>(data);
}

void UnmapBlock(char* data, size_t capacity) { munmap(data, capacity); }

}  // namespace attnserve::core
