// Moving tiles into the layouts the bf16 tile products read: fp32 rounded
// to bf16 (round to nearest even, as FloatToBf16) with the zero padding
// the products need, bf16 and fp32 transposes. The padding contract: a
// tile of `rows` x `cols` values padded to `rows_p` x `cols_p` has zeros
// everywhere outside the values, so padded contraction terms add nothing.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_BF16_TILES_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_BF16_TILES_H_

#include <cstdint>

namespace attnserve::core {

// dst[r][c] = bf16(src[r][c]) for r < rows, c < cols; 0 for the rest of
// [rows_p, cols_p). Leading dimensions in elements.
void ToBf16Padded(const float* src, int64_t lds, int64_t rows, int64_t cols,
                  uint16_t* dst, int64_t ldd, int64_t rows_p, int64_t cols_p);

// dst[c][r] = src[r][c] for r < rows, c < cols; 0 for r in [rows, rows_p).
// (bf16 values moved, not rounded.)
void TransposeBf16(const uint16_t* src, int64_t lds, int64_t rows, int64_t cols,
                   uint16_t* dst, int64_t ldd, int64_t rows_p);

// dst[c][r] = scale * src[r][c] for r < rows, c < cols.
void TransposeScaled(const float* src, int64_t lds, int64_t rows, int64_t cols,
                     float scale, float* dst, int64_t ldd);

// Zeroes rows [rows, rows_p) of `cols` bf16 values (leading dimension ld).
void ZeroBf16Rows(uint16_t* dst, int64_t ld, int64_t rows, int64_t rows_p,
                  int64_t cols);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_BF16_TILES_H_
