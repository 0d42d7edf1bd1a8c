// The position bias of a score tile and its gradient (docs/semantics.md, "pse
// (position bias)"):
//   s(i, j) = scale * q.k + coeff * bias(b, n, i, j)
// for an external pse (full, row-broadcast or the 1024-row ALiBi-compressed
// form) or the ALiBi generated from slopes.
//
//   PseBias pse(plan.pse, pse_tensor.data);
//   pse.Add(b, n, sq, i0, rows, j0, cols, tile, ld, row_scratch);
//   pse.AccumulateGrad(b, n, sq, i0, rows, j0, cols, ds, ld, partial);
//
// Compressed rows: row i >= Sq-1024 reads comp[i-(Sq-1024)][j]; an earlier
// row reads the same diagonal in the last row, comp[1023][j+Sq-1-i] (cells
// past the last column are causal-masked and read nothing).
// Thread-safe (const); the gradient's `partial` regions are the caller's.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_PSE_BIAS_H_
#define ATTNSERVE_CORE_SRC_KERNELS_PSE_BIAS_H_

#include <cstdint>

#include "attnserve/core/plan.h"

namespace attnserve::core {

class PseBias {
 public:
  // `data`: the pse tensor's bytes (external) or the FLOAT32 slopes.
  PseBias(const PseSpec& spec, const void* data);

  bool active() const { return spec_.kind != PseSpec::Kind::kNone; }
  bool generated() const {
    return spec_.kind == PseSpec::Kind::kAlibi ||
           spec_.kind == PseSpec::Kind::kAlibiSqrt;
  }

  // tile[r*ld + c] += coeff * bias(b, n, i0 + r, j0 + c) for a batch of
  // `sq` query rows. `row` holds at least `cols` floats.
  void Add(int64_t b, int64_t n, int64_t sq, int64_t i0, int64_t rows,
           int64_t j0, int64_t cols, float* tile, int64_t ld, float* row) const;

  // Floats of the per-(b, n) gradient partials: rows x cols of the pse per
  // (b, n) for an external pse, one per (b, n) for slopes.
  int64_t PartialPlaneFloats() const;

  // The gradient of the loss with respect to the bias cells of this tile,
  // given dS (= dL/ds), added to `plane`: the (b, n) region of the partials
  // (external) or a double accumulator for the slope (generated).
  void AccumulateGrad(int64_t b, int64_t n, int64_t sq, int64_t i0,
                      int64_t rows, int64_t j0, int64_t cols, const float* ds,
                      int64_t ld, float* plane, double* slope_grad) const;

 private:
  const PseSpec& spec_;
  const void* data_;
  int64_t rows_;  // Rows of the pse per (b, n): Sq, 1 or 1024.
  int64_t cols_;  // Columns of the pse: Skv (TND: the longest Skv).
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_PSE_BIAS_H_
