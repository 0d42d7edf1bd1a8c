#include "attnserve/core/chunked_bytes.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace attnserve::core {

ChunkedBytes::ChunkedBytes(std::vector<absl::string_view> chunks) {
  for (absl::string_view chunk : chunks) {
    if (chunk.empty()) continue;
    chunks_.push_back(chunk);
    starts_.push_back(size_);
    size_ += chunk.size();
  }
}

size_t ChunkedBytes::ChunkOf(size_t offset) const {
  // The last chunk starting at or before `offset`.
  auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
  return static_cast<size_t>(it - starts_.begin()) - 1;
}

template <typename F>
void ChunkedBytes::ForEachPiece(ByteRange range, F f) const {
  if (range.size == 0) return;
  size_t i = ChunkOf(range.offset);
  size_t at = range.offset - starts_[i];
  size_t left = range.size;
  while (left > 0) {
    const size_t n = std::min(left, chunks_[i].size() - at);
    f(chunks_[i].substr(at, n));
    left -= n;
    ++i;
    at = 0;
  }
}

void ChunkedBytes::CopyTo(ByteRange range, char* out) const {
  ForEachPiece(range, [&out](absl::string_view piece) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  });
}

void ChunkedBytes::AppendTo(ByteRange range, std::string* out) const {
  ForEachPiece(range, [out](absl::string_view piece) {
    out->append(piece.data(), piece.size());
  });
}

absl::string_view ChunkedBytes::Contiguous(ByteRange range) const {
  if (range.size == 0) return {};
  const size_t i = ChunkOf(range.offset);
  const size_t at = range.offset - starts_[i];
  if (chunks_[i].size() - at < range.size) return {};
  return chunks_[i].substr(at, range.size);
}

ChunkedBytes ChunkedBytes::Sub(ByteRange range) const {
  std::vector<absl::string_view> pieces;
  ForEachPiece(range,
               [&pieces](absl::string_view piece) { pieces.push_back(piece); });
  return ChunkedBytes(std::move(pieces));
}

}  // namespace attnserve::core
