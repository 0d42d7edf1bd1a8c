// Blocks of anonymous memory mapped for the core's pools (BufferPool,
// WorkspacePool), outside the heap: a pool's long-lived blocks then neither
// split the heap's free memory (where the server's received messages live)
// nor stay in it once freed (unmapping gives them back at once). Blocks from
// 2 MiB up are whole huge pages, advised for transparent huge pages (one
// fault per 2 MiB instead of per 4 KiB); smaller ones are 64 KiB-rounded.
#ifndef ATTNSERVE_CORE_SRC_MAPPED_BLOCK_H_
#define ATTNSERVE_CORE_SRC_MAPPED_BLOCK_H_

#include <cstddef>

namespace attnserve::core {

// The bytes mapped for a block of `size` bytes (>= size).
size_t MappedBlockCapacity(size_t size);
// A block of `capacity` bytes (a MappedBlockCapacity), page-aligned and
// zero-filled; null when the system refuses.
char* MapBlock(size_t capacity);
// Unmaps a block MapBlock(capacity) returned.
void UnmapBlock(char* data, size_t capacity);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_MAPPED_BLOCK_H_
