// Bytes held as a sequence of chunks (e.g. the slices a request was
// received in) and read as one run, without joining them.
//
//   ChunkedBytes bytes({"\x0a\x02", "hi"});    // size() == 4
//   std::string two(2, '\0');
//   bytes.CopyTo({2, 2}, two.data());           // "hi"
//   ChunkedBytes field = bytes.Sub({2, 2});     // the chunks of "hi"
//
// The chunks are borrowed: whoever made the ChunkedBytes keeps them alive
// (and unchanged) while it, or any Sub() of it, is used. Reading is
// thread-compatible.
#ifndef ATTNSERVE_CORE_CHUNKED_BYTES_H_
#define ATTNSERVE_CORE_CHUNKED_BYTES_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace attnserve::core {

// A run of bytes within a ChunkedBytes.
struct ByteRange {
  size_t offset = 0;
  size_t size = 0;
};

class ChunkedBytes {
 public:
  ChunkedBytes() = default;
  // Empty chunks are skipped.
  explicit ChunkedBytes(std::vector<absl::string_view> chunks);

  size_t size() const { return size_; }
  const std::vector<absl::string_view>& chunks() const { return chunks_; }

  // Copies `range` (which must lie within size()) to `out`.
  void CopyTo(ByteRange range, char* out) const;
  // Appends `range` (which must lie within size()) to `out`.
  void AppendTo(ByteRange range, std::string* out) const;
  // The bytes of `range` when they lie in one chunk; empty otherwise (and
  // for an empty range).
  absl::string_view Contiguous(ByteRange range) const;
  // The chunks of `range` (which must lie within size()), as bytes of their
  // own: byte 0 of the result is byte range.offset of this.
  ChunkedBytes Sub(ByteRange range) const;

  // Index of the chunk holding byte `offset` (< size()), and the offset of
  // chunk `i`'s first byte.
  size_t ChunkOf(size_t offset) const;
  size_t ChunkStart(size_t i) const { return starts_[i]; }

 private:
  // Calls f(piece) for the pieces of `range`, one per chunk, in order.
  template <typename F>
  void ForEachPiece(ByteRange range, F f) const;

  std::vector<absl::string_view> chunks_;
  // starts_[i]: offset of chunks_[i]'s first byte.
  std::vector<size_t> starts_;
  size_t size_ = 0;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_CHUNKED_BYTES_H_
