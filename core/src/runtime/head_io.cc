#include "runtime/head_io.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

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

void LoadRows(const void* base, const HeadSlice& slice, int64_t row0,
              int64_t rows, float* dst) {
  const size_t item = ItemSize(slice.dtype);
  const auto* bytes = static_cast<const char*>(base);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t elem = slice.offset + (row0 + r) * slice.row_stride;
    ToFloat(slice.dtype, bytes + static_cast<size_t>(elem) * item,
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

void CopyBf16Rows(const void* base, const HeadSlice& slice, int64_t row0,
                  int64_t rows, uint16_t* dst) {
  const auto* src = static_cast<const uint16_t*>(base);
  const size_t bytes = static_cast<size_t>(slice.cols) * sizeof(uint16_t);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t elem = slice.offset + (row0 + r) * slice.row_stride;
    std::memcpy(dst + r * slice.cols, src + elem, bytes);
  }
}

}  // namespace attnserve::core
