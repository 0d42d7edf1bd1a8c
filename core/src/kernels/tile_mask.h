// Which score cells a tile keeps (docs/semantics.md, "Masks and sparse modes"),
// in the per-batch form the plan resolves every sparse mode to:
//   keep(i, j) = (lo <= j - i <= hi || j < prefix) && !atten_mask(i, j)
// with batch-local i, j.
//
// Classify() lets kernels skip tiles nothing in is kept and skip the
// per-cell pass on tiles everything in is kept.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_
#define ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "attnserve/core/plan.h"

namespace attnserve::core {

enum class TileCoverage { kEmpty, kPartial, kFull };

class TileMask {
 public:
  // `spec` must outlive the TileMask; `mask_data` is atten_mask's bytes
  // (unused unless spec.has_tensor).
  TileMask(const MaskSpec& spec, const uint8_t* mask_data)
      : spec_(spec), data_(mask_data) {}

  // Coverage of rows [i0, i0 + rows) x columns [j0, j0 + cols) of batch b.
  TileCoverage Classify(int64_t b, int64_t i0, int64_t rows, int64_t j0,
                        int64_t cols) const {
    const BatchBand& band = spec_.bands[static_cast<size_t>(b)];
    const int64_t i1 = i0 + rows - 1, j1 = j0 + cols - 1;
    const bool band_empty = j0 - i1 > band.hi || j1 - i0 < band.lo;
    const bool band_full = j1 - i0 <= band.hi && j0 - i1 >= band.lo;
    const bool prefix_empty = j0 >= band.prefix;
    const bool prefix_full = j1 < band.prefix;
    if (band_empty && prefix_empty) return TileCoverage::kEmpty;
    if ((band_full || prefix_full) && !spec_.has_tensor) {
      return TileCoverage::kFull;
    }
    return TileCoverage::kPartial;
  }

  // Sets the masked cells of the [rows x cols] tile `s` (leading dim ld) of
  // (batch b, query head n) to -inf.
  void Apply(int64_t b, int64_t n, int64_t i0, int64_t rows, int64_t j0,
             int64_t cols, float* s, int64_t ld) const {
    const BatchBand& band = spec_.bands[static_cast<size_t>(b)];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      float* row = s + r * ld;
      // Kept columns c: band [i + lo - j0, i + hi - j0], prefix [0, p - j0).
      const int64_t band_lo = std::max<int64_t>(0, i + band.lo - j0);
      const int64_t band_hi = std::min<int64_t>(cols - 1, i + band.hi - j0);
      const int64_t prefix_end = std::clamp<int64_t>(band.prefix - j0, 0, cols);
      for (int64_t c = prefix_end; c < cols; ++c) {
        if (c < band_lo || c > band_hi) row[c] = -INFINITY;
      }
      if (!spec_.has_tensor) continue;
      const uint8_t* m = data_ + band.mask_base + n * spec_.stride_n +
                         i * spec_.stride_i + j0 * spec_.stride_j;
      for (int64_t c = 0; c < cols; ++c) {
        if (m[c * spec_.stride_j] != 0) row[c] = -INFINITY;
      }
    }
  }

 private:
  const MaskSpec& spec_;
  const uint8_t* data_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_TILE_MASK_H_
