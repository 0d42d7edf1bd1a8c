#include "runtime/head_io.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#define ATTNSERVE_STREAMING_STORES 1
#else
#define ATTNSERVE_STREAMING_STORES 0
#endif

namespace attnserve::core {

HeadStrides StridesFor(Layout layout, int64_t batch, int64_t seq, int64_t heads,
                       int64_t dim) {
  switch (layout) {
    case Layout::kBSH:
    case Layout::kBSND:
      return HeadStrides{seq * heads * dim, heads * dim, dim};
    case Layout::kSBH:
      return HeadStrides{heads * dim, batch * heads * dim, dim};
    case Layout::kBNSD:
      return HeadStrides{heads * seq * dim, dim, seq * dim};
    case Layout::kTND:  // One batch of T tokens: b unused.
      return HeadStrides{0, heads * dim, dim};
  }
  return {};
}

namespace {

// Reads rows of an InputBytes: a pointer to each row's bytes, in place when
// they lie in one chunk (ToFloat and memcpy need no alignment), joined into
// a buffer of the reader's own when they straddle two. Rows are mostly read
// in increasing order, so the chunk of the last row and the next one are
// tried before a search.
class RowReader {
 public:
  RowReader(const InputBytes& src, size_t row_bytes)
      : src_(src), row_bytes_(row_bytes) {}

  // The `row_bytes` bytes at byte `offset` of the tensor.
  const char* Row(size_t offset) {
    if (src_.chunks == nullptr) {
      return static_cast<const char*>(src_.data) + offset;
    }
    const ChunkedBytes& c = *src_.chunks;
    if (!InChunk(chunk_, offset)) {
      chunk_ = InChunk(chunk_ + 1, offset) ? chunk_ + 1 : c.ChunkOf(offset);
    }
    const size_t at = offset - c.ChunkStart(chunk_);
    const absl::string_view piece = c.chunks()[chunk_];
    if (piece.size() - at >= row_bytes_) return piece.data() + at;
    // Rare: one row per chunk boundary at most.
    joined_.resize(row_bytes_);
    c.CopyTo(ByteRange{offset, row_bytes_}, joined_.data());
    return joined_.data();
  }

 private:
  bool InChunk(size_t i, size_t offset) const {
    const ChunkedBytes& c = *src_.chunks;
    if (i >= c.chunks().size()) return false;
    const size_t start = c.ChunkStart(i);
    return offset >= start && offset - start < c.chunks()[i].size();
  }

  InputBytes src_;
  size_t row_bytes_;
  size_t chunk_ = 0;
  std::vector<char> joined_;
};

// When rows [row0, row0 + rows) of `slice` are one run of bytes (row_stride
// == cols: a head of a BNSD tensor), copies them to `dst` as they are, in
// as few pieces as the bytes are in rather than row by row, and returns
// true; false (nothing copied) otherwise.
bool CopyRunOfRows(const InputBytes& src, const HeadSlice& slice, int64_t row0,
                   int64_t rows, void* dst) {
  if (slice.row_stride != slice.cols || rows <= 0) return false;
  const size_t item = ItemSize(slice.dtype);
  const ByteRange range{
      static_cast<size_t>(slice.offset + row0 * slice.row_stride) * item,
      static_cast<size_t>(rows * slice.cols) * item};
  if (src.chunks != nullptr) {
    src.chunks->CopyTo(range, static_cast<char*>(dst));
  } else {
    std::memcpy(dst, static_cast<const char*>(src.data) + range.offset,
                range.size);
  }
  return true;
}

}  // namespace

void LoadRows(const InputBytes& src, const HeadSlice& slice, int64_t row0,
              int64_t rows, float* dst) {
  // FLOAT32 rows need no widening: a run of them is copied as it is.
  if (slice.dtype == DType::kFloat32 &&
      CopyRunOfRows(src, slice, row0, rows, dst)) {
    return;
  }
  const size_t item = ItemSize(slice.dtype);
  RowReader reader(src, static_cast<size_t>(slice.cols) * item);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t elem = slice.offset + (row0 + r) * slice.row_stride;
    ToFloat(slice.dtype, reader.Row(static_cast<size_t>(elem) * item),
            dst + r * slice.cols, static_cast<size_t>(slice.cols));
  }
}

void StoreRows(const float* src, const HeadSlice& slice, int64_t row0,
               int64_t rows, void* base) {
  const size_t item = ItemSize(slice.dtype);
  auto* bytes = static_cast<char*>(base);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t elem = slice.offset + (row0 + r) * slice.row_stride;
    FromFloat(slice.dtype, src + r * slice.cols,
              bytes + static_cast<size_t>(elem) * item,
              static_cast<size_t>(slice.cols));
  }
}

namespace {

#if ATTNSERVE_STREAMING_STORES
bool Aligned64(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 63u) == 0;
}

// dst[0..n) = src[0..n), n a multiple of 16, dst 64-byte aligned.
void StreamFloats(const float* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 4) {
    _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  }
}
#endif

}  // namespace

void StoreRowsStreaming(const float* src, const HeadSlice& slice, int64_t row0,
                        int64_t rows, void* base) {
#if ATTNSERVE_STREAMING_STORES
  if (slice.dtype == DType::kFloat32 && slice.cols % 16 == 0) {
    auto* out = static_cast<float*>(base);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = out + slice.offset + (row0 + r) * slice.row_stride;
      if (Aligned64(dst)) {
        StreamFloats(src + r * slice.cols, dst, slice.cols);
      } else {
        std::memcpy(dst, src + r * slice.cols,
                    static_cast<size_t>(slice.cols) * sizeof(float));
      }
    }
    return;
  }
#endif
  StoreRows(src, slice, row0, rows, base);
}

void FillStreaming(float* dst, int64_t n, float value) {
#if ATTNSERVE_STREAMING_STORES
  if (n % 4 == 0 && (reinterpret_cast<uintptr_t>(dst) & 15u) == 0) {
    const __m128 v = _mm_set1_ps(value);
    for (int64_t i = 0; i < n; i += 4) _mm_stream_ps(dst + i, v);
    return;
  }
#endif
  std::fill(dst, dst + n, value);
}

void FenceStreaming() {
#if ATTNSERVE_STREAMING_STORES
  _mm_sfence();
#endif
}

void CopyBf16Rows(const InputBytes& src, const HeadSlice& slice, int64_t row0,
                  int64_t rows, uint16_t* dst) {
  if (CopyRunOfRows(src, slice, row0, rows, dst)) return;
  const size_t bytes = static_cast<size_t>(slice.cols) * sizeof(uint16_t);
  RowReader reader(src, bytes);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t elem = slice.offset + (row0 + r) * slice.row_stride;
    std::memcpy(dst + r * slice.cols,
                reader.Row(static_cast<size_t>(elem) * sizeof(uint16_t)),
                bytes);
  }
}

}  // namespace attnserve::core
