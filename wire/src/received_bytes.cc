#include "attnserve/wire/received_bytes.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace attnserve::wire {

ReceivedBytes::ReceivedBytes(std::vector<absl::string_view> chunks) {
  for (absl::string_view chunk : chunks) {
    if (chunk.empty()) continue;
    chunks_.push_back(chunk);
    starts_.push_back(size_);
    size_ += chunk.size();
  }
}

size_t ReceivedBytes::ChunkOf(size_t offset) const {
  // The last chunk starting at or before `offset`.
  auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
  return static_cast<size_t>(it - starts_.begin()) - 1;
}

template <typename F>
void ReceivedBytes::ForEachPiece(ByteRange range, F f) const {
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

void ReceivedBytes::CopyTo(ByteRange range, char* out) const {
  ForEachPiece(range, [&out](absl::string_view piece) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  });
}

void ReceivedBytes::AppendTo(ByteRange range, std::string* out) const {
  ForEachPiece(range, [out](absl::string_view piece) {
    out->append(piece.data(), piece.size());
  });
}

absl::string_view ReceivedBytes::Contiguous(ByteRange range) const {
  if (range.size == 0) return {};
  const size_t i = ChunkOf(range.offset);
  const size_t at = range.offset - starts_[i];
  if (chunks_[i].size() - at < range.size) return {};
  return chunks_[i].substr(at, range.size);
}

}  // namespace attnserve::wire
