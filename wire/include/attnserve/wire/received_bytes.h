// A message's bytes as they were received: a sequence of chunks (e.g. the
// slices of a gRPC byte buffer) read as one run of bytes, without joining
// them.
//
//   ReceivedBytes bytes({"\x0a\x02", "hi"});   // size() == 4
//   std::string two(2, '\0');
//   bytes.CopyTo(2, 2, two.data());             // "hi"
//
// The chunks are borrowed: whoever made the ReceivedBytes keeps them alive
// (and unchanged) while it is used. Reading is thread-compatible.
#ifndef ATTNSERVE_WIRE_RECEIVED_BYTES_H_
#define ATTNSERVE_WIRE_RECEIVED_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace attnserve::wire {

// A run of bytes within a ReceivedBytes.
struct ByteRange {
  size_t offset = 0;
  size_t size = 0;
};

class ReceivedBytes {
 public:
  ReceivedBytes() = default;
  // Empty chunks are skipped.
  explicit ReceivedBytes(std::vector<absl::string_view> chunks);

  size_t size() const { return size_; }
  const std::vector<absl::string_view>& chunks() const { return chunks_; }

  // Copies `range` (which must lie within size()) to `out`.
  void CopyTo(ByteRange range, char* out) const;
  // Appends `range` (which must lie within size()) to `out`.
  void AppendTo(ByteRange range, std::string* out) const;
  // The bytes of `range` when they lie in one chunk; empty otherwise (and
  // for an empty range).
  absl::string_view Contiguous(ByteRange range) const;

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

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_RECEIVED_BYTES_H_
