// What one (query token, kv head) attends in NSA selected attention, and
// the gather of those keys/values into contiguous fp32 rows. Shared by the
// forward and backward kernels.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/nsa_attention.h"
#include "runtime/head_io.h"

namespace attnserve::core {

// The largest selected_block_count and group size G the plan accepts.
inline constexpr int kNsaMaxBlocks = 32;
inline constexpr int kNsaMaxGroup = 32;

// The selected blocks of one token and kv head, in topk order: block c
// covers batch-local key rows [first[c], first[c] + rows[c]). In causal mode
// a block is cut to the keys at positions <= the query's, and blocks
// entirely after it are dropped.
struct NsaSelection {
  int count = 0;
  int64_t slots = 0;  // Σ rows: the attended keys.
  int64_t first[kNsaMaxBlocks];
  int64_t rows[kNsaMaxBlocks];
};

// Batch of query token t: the b with q_start[b] <= t < q_start[b+1].
inline int64_t NsaBatchOf(const NsaKernelArgs& a, int64_t t) {
  const auto begin = a.q_start.begin() + 1;
  return std::upper_bound(begin, a.q_start.end(), t) - begin;
}

// The selection of token t (batch b) for kv head n2.
inline NsaSelection SelectBlocks(const NsaKernelArgs& a, int64_t t, int64_t b,
                                 int64_t n2) {
  const NsaDims& d = a.dims;
  int32_t idx[kNsaMaxBlocks];
  std::memcpy(idx,
              static_cast<const char*>(a.topk) +
                  (t * d.n2 + n2) * d.block_count * sizeof(int32_t),
              static_cast<size_t>(d.block_count) * sizeof(int32_t));
  const int64_t i = t - a.q_start[static_cast<size_t>(b)];
  NsaSelection sel;
  for (int64_t c = 0; c < d.block_count; ++c) {
    const int64_t first = int64_t{idx[c]} * d.block_size;
    const int64_t rows =
        d.causal ? std::min(d.block_size, i - first + 1) : d.block_size;
    if (rows <= 0) continue;
    sel.first[sel.count] = first;
    sel.rows[sel.count] = rows;
    ++sel.count;
    sel.slots += rows;
  }
  return sel;
}

// Rows [row0, row0 + rows) of head n of a TND tensor with `heads` heads of
// `cols` columns.
inline HeadSlice TndHead(DType dtype, int64_t heads, int64_t n, int64_t cols) {
  return HeadSlice{dtype, n * cols, heads * cols, cols};
}

// Rows of `group` consecutive heads starting at head n of token t: they are
// contiguous in TND, so the slice has one row per head.
inline HeadSlice TndGroup(DType dtype, int64_t heads, int64_t t, int64_t n,
                          int64_t cols) {
  return HeadSlice{dtype, (t * heads + n) * cols, cols, cols};
}

// Widens the selected rows of kv head n2 of `tensor` (batch starting at key
// row kv0, `cols` columns) into dst, one dense row per slot.
inline void GatherSelected(const NsaSelection& sel, const void* tensor,
                           DType dtype, int64_t n2_heads, int64_t n2,
                           int64_t cols, int64_t kv0, float* dst) {
  const HeadSlice head = TndHead(dtype, n2_heads, n2, cols);
  for (int c = 0; c < sel.count; ++c) {
    LoadRows(tensor, head, kv0 + sel.first[c], sel.rows[c], dst);
    dst += sel.rows[c] * cols;
  }
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
