// Shapes of the attention layouts (docs/semantics.md, "Layouts and heads");
// their element addressing (strides) is the runtime's, in runtime/head_io.h.
#ifndef ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_
#define ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "attnserve/core/plan.h"

namespace attnserve::core {

// The shape of a tensor of `layout` with batch B, sequence S, heads N and
// dim D, as the layout lays it out.
std::vector<int64_t> ShapeFor(Layout layout, int64_t batch, int64_t seq,
                              int64_t heads, int64_t dim);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_PLAN_LAYOUT_H_
