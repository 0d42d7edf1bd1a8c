// Element addressing of the attention layouts (docs/semantics.md, "Layouts and
// heads").
//
// A head is addressed by (b, n); within it, row s and column d. For every
// padded layout d is contiguous, so a head is a strided sequence of rows:
//   offset(b, s, n, d) = b*stride_b + s*stride_s + n*stride_n + d
#ifndef ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_
#define ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "attnserve/core/plan.h"

namespace attnserve::core {

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

// The shape of such a tensor as the layout lays it out.
std::vector<int64_t> ShapeFor(Layout layout, int64_t batch, int64_t seq,
                              int64_t heads, int64_t dim);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_
