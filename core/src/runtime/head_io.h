// Moving one head's rows between wire tensors (any layout, any float dtype)
// and contiguous fp32 (or, for the bf16 tile path, bf16) scratch: the only
// place kernels touch tensor bytes.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_

#include <cstdint>

#include "attnserve/core/chunked_bytes.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/plan.h"

namespace attnserve::core {

// Element addressing of a tensor in one of the attention layouts
// (docs/semantics.md, "Layouts and heads"). A head is addressed by (b, n);
// within it, row s and column d. For every layout d is contiguous, so a head is
// a strided sequence of rows:
//   offset(b, s, n, d) = b*stride_b + s*stride_s + n*stride_n + d
struct HeadStrides {
  int64_t b = 0;
  int64_t s = 0;
  int64_t n = 0;

  int64_t Offset(int64_t bi, int64_t si, int64_t ni) const {
    return bi * b + si * s + ni * n;
  }
};

// Strides of a tensor of `layout` with batch B, sequence S, heads N, dim D.
HeadStrides StridesFor(Layout layout, int64_t batch, int64_t seq, int64_t heads,
                       int64_t dim);

// Rows of one (batch, head) slice: row r starts at element
// `offset + r * row_stride` and holds `cols` contiguous elements.
struct HeadSlice {
  DType dtype = DType::kFloat32;
  int64_t offset = 0;
  int64_t row_stride = 0;
  int64_t cols = 0;
};

// An input tensor's bytes: contiguous at `data`, or in `chunks` (as
// received; TensorView::chunks). Rows are read from the chunks in place, at
// any alignment; a row split between two chunks is joined in a small buffer
// first.
struct InputBytes {
  InputBytes() = default;
  InputBytes(const void* contiguous) : data(contiguous) {}  // NOLINT
  InputBytes(const void* contiguous, const ChunkedBytes* chunked)
      : data(contiguous), chunks(chunked) {}

  const void* data = nullptr;
  const ChunkedBytes* chunks = nullptr;
};

// dst[r][c] = float(src[slice row row0 + r][c]) for r < rows; dst is dense
// with leading dimension slice.cols. FLOAT32 rows that are one run of bytes
// (row_stride == cols, a BNSD head) are copied as one block, piece by piece
// of the chunks they are in.
void LoadRows(const InputBytes& src, const HeadSlice& slice, int64_t row0,
              int64_t rows, float* dst);

// The reverse: narrows to slice.dtype (round-to-nearest-even).
void StoreRows(const float* src, const HeadSlice& slice, int64_t row0,
               int64_t rows, void* base);

// StoreRows with non-temporal stores where it can (FLOAT32 rows of whole
// 64-byte lines at 64-byte aligned addresses, x86): for outputs far larger
// than the caches, whose lines are then neither read for ownership nor
// kept. The same bytes as StoreRows. Call FenceStreaming() before the
// bytes are handed to another thread.
void StoreRowsStreaming(const float* src, const HeadSlice& slice, int64_t row0,
                        int64_t rows, void* base);

// dst[0..n) = value with non-temporal stores where it can (16-byte aligned
// dst, n a multiple of 4); then FenceStreaming() as above.
void FillStreaming(float* dst, int64_t n, float value);

// Orders this thread's non-temporal stores before its later stores.
void FenceStreaming();

// dst[r][c] = src[slice row row0 + r][c] of a BFLOAT16 slice, copied as
// they are (the bf16 tile path's operands); dst has leading dimension
// slice.cols. Rows that are one run of bytes (row_stride == cols, a BNSD
// head) are copied as one block, piece by piece of the chunks they are in.
void CopyBf16Rows(const InputBytes& src, const HeadSlice& slice, int64_t row0,
                  int64_t rows, uint16_t* dst);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_HEAD_IO_H_
