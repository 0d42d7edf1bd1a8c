// Which score cells a tile keeps: the band of sparse_mode 0
// (i - pre_tokens <= j <= i + next_tokens, top-left origin) and an optional
// explicit atten_mask (1 = masked) with broadcast strides.
//
// Classify() lets kernels skip tiles the band masks entirely and skip the
// per-cell pass on tiles it keeps entirely.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_
#define ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_

#include <cmath>
#include <cstdint>

#include "attnserve/core/plan.h"

namespace attnserve::core {

enum class TileCoverage { kEmpty, kPartial, kFull };

class TileMask {
 public:
  TileMask(const MaskSpec& spec, const uint8_t* mask_data)
      : spec_(spec), data_(mask_data) {}

  // Coverage of rows [i0, i0 + rows) x columns [j0, j0 + cols).
  TileCoverage Classify(int64_t i0, int64_t rows, int64_t j0,
                        int64_t cols) const {
    const int64_t i1 = i0 + rows - 1, j1 = j0 + cols - 1;
    if (i1 + spec_.next_tokens < j0 || i0 - spec_.pre_tokens > j1) {
      return TileCoverage::kEmpty;
    }
    const bool band_full =
        i1 - spec_.pre_tokens <= j0 && j1 <= i0 + spec_.next_tokens;
    return band_full && !spec_.has_tensor ? TileCoverage::kFull
                                          : TileCoverage::kPartial;
  }

  // Sets masked cells of the [rows x cols] tile `s` (leading dim ld) to -inf.
  void Apply(int64_t b, int64_t n, int64_t i0, int64_t rows, int64_t j0,
             int64_t cols, float* s, int64_t ld) const {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const int64_t lo = i - spec_.pre_tokens, hi = i + spec_.next_tokens;
      float* row = s + r * ld;
      const uint8_t* m = spec_.has_tensor
                             ? data_ + b * spec_.stride_b + n * spec_.stride_n +
                                   i * spec_.stride_i + j0 * spec_.stride_j
                             : nullptr;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t j = j0 + c;
        const bool masked =
            j < lo || j > hi || (m != nullptr && m[c * spec_.stride_j] != 0);
        if (masked) row[c] = -INFINITY;
      }
    }
  }

 private:
  MaskSpec spec_;
  const uint8_t* data_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_
