// Moving one head's rows between wire tensors (any layout, any float dtype)
// and contiguous fp32 scratch: the only place kernels touch tensor bytes.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_

#include <cstdint>

#include "attnserve/core/dtype.h"

namespace attnserve::core {

// Rows of one (batch, head) slice: row r starts at element
// `offset + r * row_stride` and holds `cols` contiguous elements.
struct HeadSlice {
  DType dtype = DType::kFloat32;
  int64_t offset = 0;
  int64_t row_stride = 0;
  int64_t cols = 0;
};

// dst[r][c] = float(src[slice row row0 + r][c]) for r < rows; dst is dense
// with leading dimension slice.cols.
void LoadRows(const void* base, const HeadSlice& slice, int64_t row0,
              int64_t rows, float* dst);

// The reverse: narrows to slice.dtype (round-to-nearest-even).
void StoreRows(const float* src, const HeadSlice& slice, int64_t row0,
               int64_t rows, void* base);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_
