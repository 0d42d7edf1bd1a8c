#include "runtime/head_io.h"

#include <cstring>

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
