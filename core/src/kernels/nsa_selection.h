// What one (query token, kv head) attends in NSA selected attention, and the
// per-worker fp32 copy of a (batch, kv head)'s keys and values that the
// products read the selected blocks from. Shared by the forward and
// backward kernels.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/nsa_attention.h"
#include "runtime/head_io.h"

namespace attnserve::core {

// The largest selected_block_count and group size G the plan accepts.
inline constexpr int kNsaMaxBlocks = 32;
inline constexpr int kNsaMaxGroup = 32;

// The keys one token and kv head attend, as runs of consecutive batch-local
// key rows in topk order: run c covers rows [first[c], first[c] + rows[c]).
// Selected blocks that follow each other in memory and in topk order share
// a run (fewer, larger products; the slot order is unchanged). In causal
// mode a block is cut to the keys at positions <= the query's, and blocks
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
    sel.slots += rows;
    if (sel.count > 0 &&
        sel.first[sel.count - 1] + sel.rows[sel.count - 1] == first) {
      sel.rows[sel.count - 1] += rows;
      continue;
    }
    sel.first[sel.count] = first;
    sel.rows[sel.count] = rows;
    ++sel.count;
  }
  return sel;
}

// Rows [row0, row0 + rows) of head n of a TND tensor with `heads` heads of
// `cols` columns.
inline HeadSlice TndHead(DType dtype, int64_t heads, int64_t n, int64_t cols) {
  return HeadSlice{dtype, n * cols, heads * cols, cols};
}

// Rows of consecutive heads starting at head n of token t: they are
// contiguous in TND, so the slice has one row per head.
inline HeadSlice TndGroup(DType dtype, int64_t heads, int64_t t, int64_t n,
                          int64_t cols) {
  return HeadSlice{dtype, (t * heads + n) * cols, cols, cols};
}

// One worker's fp32 copy of the keys and values of one (batch, kv head),
// widened block by block the first time a selection needs them. Selected
// blocks are read from here by the products directly, so a block is
// converted once per worker and head whatever number of tokens select it.
class NsaKvCache {
 public:
  // `k` / `v` hold max_skv rows of D / Dv floats.
  void Init(const NsaDims& d, float* k, float* v) {
    k_ = k;
    v_ = v;
    stamp_.assign(static_cast<size_t>(d.max_skv / d.block_size), 0);
  }

  // Makes the blocks of `sel` (batch b, kv head n2) available.
  void Load(const NsaKernelArgs& a, int64_t b, int64_t n2,
            const NsaSelection& sel) {
    const NsaDims& d = a.dims;
    if (b != b_ || n2 != n2_) {
      b_ = b;
      n2_ = n2;
      ++epoch_;
    }
    const int64_t kv0 = a.kv_start[static_cast<size_t>(b)];
    const HeadSlice k_head = TndHead(d.dtype, d.n2, n2, d.d);
    const HeadSlice v_head = TndHead(d.dtype, d.n2, n2, d.dv);
    for (int c = 0; c < sel.count; ++c) {
      const int64_t last = (sel.first[c] + sel.rows[c] - 1) / d.block_size;
      for (int64_t blk = sel.first[c] / d.block_size; blk <= last; ++blk) {
        uint32_t& stamp = stamp_[static_cast<size_t>(blk)];
        if (stamp == epoch_) continue;
        const int64_t row = blk * d.block_size;
        LoadRows(a.key, k_head, kv0 + row, d.block_size, k_ + row * d.d);
        LoadRows(a.value, v_head, kv0 + row, d.block_size, v_ + row * d.dv);
        stamp = epoch_;
      }
    }
  }

  // Rows of the loaded batch and head, batch-local.
  const float* k_row(int64_t row, int64_t d) const { return k_ + row * d; }
  const float* v_row(int64_t row, int64_t dv) const { return v_ + row * dv; }

 private:
  float* k_ = nullptr;
  float* v_ = nullptr;
  std::vector<uint32_t> stamp_;  // Block holds the current head: == epoch_.
  uint32_t epoch_ = 0;
  int64_t b_ = -1, n2_ = -1;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
