#include "runtime/head_io.h"

namespace attnserve::core {

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

}  // namespace attnserve::core
