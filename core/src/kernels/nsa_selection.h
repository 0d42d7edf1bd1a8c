// What a tile of query tokens attends in NSA selected attention, grouped by
// key block, and the per-worker copy of a (batch, kv head)'s keys and values
// the products read. Shared by the forward and backward kernels.
//
// A tile is up to `token_tile` consecutive query tokens of one batch, seen
// through one kv head. Each token's selection is a list of slots in topk
// order; block c of token t occupies the token's slot columns
// [col, col + rows). The tile groups these (token, block) pairs by block so
// that the product with a block runs once for all tokens of the tile that
// select it: the block is gathered (and packed by the GEMM) once per tile
// instead of once per token, and the products have G x (tokens) rows.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
#define ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/nsa_attention.h"
#include "runtime/head_io.h"

namespace attnserve::core {

// Limits the plan guarantees: K <= 32, G <= 32, tokens per tile <= 32 and
// tokens per tile x G <= 512.
inline constexpr int kNsaMaxBlocks = 32;
inline constexpr int kNsaMaxTileTokens = 32;
inline constexpr int kNsaMaxTileRows = 512;

// Batch of query token t: the b with q_start[b] <= t < q_start[b+1].
inline int64_t NsaBatchOf(const NsaKernelArgs& a, int64_t t) {
  const auto begin = a.q_start.begin() + 1;
  return std::upper_bound(begin, a.q_start.end(), t) - begin;
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

// One selected block of one token: slot columns [col, col + rows) of the
// token read key rows [block * bs, block * bs + rows) of its batch. `rows`
// is bs, or less for the block the causal rule cuts at the query position.
struct NsaSlotRun {
  int32_t block = 0;
  int32_t token = 0;  // Index within the tile.
  int32_t col = 0;
  int32_t rows = 0;
};

// One token of a block's group: its runs are runs[first, first + count)
// (more than one when the token selects the block more than once: the
// block's keys then count `count` times, so its probabilities are
// weighted by `count`).
struct NsaMember {
  int32_t token = 0;
  int32_t rows = 0;
  int32_t first = 0;
  int32_t count = 0;
};

class NsaTile {
 public:
  void Reserve() {
    runs_.reserve(kNsaMaxTileTokens * kNsaMaxBlocks);
    members_.reserve(kNsaMaxTileTokens * kNsaMaxBlocks);
    groups_.reserve(kNsaMaxTileTokens * kNsaMaxBlocks);
  }

  // The selections of tokens [t0, t1) (batch b) for kv head n2.
  void Build(const NsaKernelArgs& a, int64_t b, int64_t n2, int64_t t0,
             int64_t t1) {
    const NsaDims& d = a.dims;
    tokens_ = static_cast<int>(t1 - t0);
    runs_.clear();
    int32_t idx[kNsaMaxBlocks];
    for (int ti = 0; ti < tokens_; ++ti) {
      const int64_t t = t0 + ti;
      std::memcpy(idx,
                  static_cast<const char*>(a.topk) +
                      (t * d.n2 + n2) * d.block_count * sizeof(int32_t),
                  static_cast<size_t>(d.block_count) * sizeof(int32_t));
      const int64_t i = t - a.q_start[static_cast<size_t>(b)];
      int32_t col = 0;
      for (int64_t c = 0; c < d.block_count; ++c) {
        const int64_t first = int64_t{idx[c]} * d.block_size;
        const int64_t rows =
            d.causal ? std::min(d.block_size, i - first + 1) : d.block_size;
        if (rows <= 0) continue;
        runs_.push_back(
            NsaSlotRun{idx[c], ti, col, static_cast<int32_t>(rows)});
        col += static_cast<int32_t>(rows);
      }
      slots_[ti] = col;
    }
    // Group by block, then token, then slot order: a fixed order, so the
    // sums are the same however the work is shared out.
    std::sort(runs_.begin(), runs_.end(),
              [](const NsaSlotRun& x, const NsaSlotRun& y) {
                if (x.block != y.block) return x.block < y.block;
                if (x.token != y.token) return x.token < y.token;
                return x.col < y.col;
              });
    members_.clear();
    groups_.clear();
    for (size_t r = 0; r < runs_.size(); ++r) {
      const NsaSlotRun& run = runs_[r];
      const bool new_group = r == 0 || runs_[r - 1].block != run.block;
      if (new_group) {
        groups_.push_back(
            Group{run.block, static_cast<int32_t>(members_.size()), 0});
      }
      if (new_group || runs_[r - 1].token != run.token) {
        members_.push_back(
            NsaMember{run.token, run.rows, static_cast<int32_t>(r), 0});
        ++groups_.back().members;
      }
      ++members_.back().count;
    }
  }

  int tokens() const { return tokens_; }
  // Members of all blocks together.
  int64_t members() const { return static_cast<int64_t>(members_.size()); }
  // Slots (attended keys) of token ti.
  int32_t slots(int ti) const { return slots_[ti]; }
  const std::vector<NsaSlotRun>& runs() const { return runs_; }

  // Calls fn(block, members, member_count) for each selected block, in
  // increasing block order. Members are in token order.
  template <typename Fn>
  void ForEachBlock(Fn fn) const {
    for (const Group& g : groups_) {
      fn(int64_t{g.block}, &members_[static_cast<size_t>(g.first)], g.members);
    }
  }

 private:
  struct Group {
    int32_t block;
    int32_t first;    // Index of its first member.
    int32_t members;  // Number of members.
  };
  int tokens_ = 0;
  int32_t slots_[kNsaMaxTileTokens] = {};
  std::vector<NsaSlotRun> runs_;
  std::vector<NsaMember> members_;
  std::vector<Group> groups_;
};

// One worker's copy of the keys and values of one (batch, kv head), in the
// products' precision (fp32, widened; or bf16, as sent), filled block by
// block the first time a tile selects the block, so a block is loaded once
// per worker and head whatever number of tokens select it.
class NsaKvCache {
 public:
  // Either `k` / `v` (fp32) or `kb` / `vb` (bf16) are set; each holds
  // max_skv rows of D / Dv elements.
  void Init(const NsaDims& d, float* k, float* v, uint16_t* kb, uint16_t* vb) {
    k_ = k;
    v_ = v;
    kb_ = kb;
    vb_ = vb;
    stamp_.assign(static_cast<size_t>(d.max_skv / d.block_size), 0);
  }

  // Makes the blocks `tile` selects (batch b, kv head n2) available.
  void Load(const NsaKernelArgs& a, int64_t b, int64_t n2,
            const NsaTile& tile) {
    const NsaDims& d = a.dims;
    if (b != b_ || n2 != n2_) {
      b_ = b;
      n2_ = n2;
      ++epoch_;
    }
    const int64_t kv0 = a.kv_start[static_cast<size_t>(b)];
    const HeadSlice k_head = TndHead(d.dtype, d.n2, n2, d.d);
    const HeadSlice v_head = TndHead(d.dtype, d.n2, n2, d.dv);
    for (const NsaSlotRun& run : tile.runs()) {
      uint32_t& stamp = stamp_[static_cast<size_t>(run.block)];
      if (stamp == epoch_) continue;
      const int64_t row = int64_t{run.block} * d.block_size;
      if (kb_ != nullptr) {
        CopyBf16Rows(a.key, k_head, kv0 + row, d.block_size, kb_ + row * d.d);
        CopyBf16Rows(a.value, v_head, kv0 + row, d.block_size,
                     vb_ + row * d.dv);
      } else {
        LoadRows(a.key, k_head, kv0 + row, d.block_size, k_ + row * d.d);
        LoadRows(a.value, v_head, kv0 + row, d.block_size, v_ + row * d.dv);
      }
      stamp = epoch_;
    }
  }

  // The first key / value row of `block` (batch-local).
  const float* k_block(int64_t block, const NsaDims& d) const {
    return k_ + block * d.block_size * d.d;
  }
  const float* v_block(int64_t block, const NsaDims& d) const {
    return v_ + block * d.block_size * d.dv;
  }
  const uint16_t* kb_block(int64_t block, const NsaDims& d) const {
    return kb_ + block * d.block_size * d.d;
  }
  const uint16_t* vb_block(int64_t block, const NsaDims& d) const {
    return vb_ + block * d.block_size * d.dv;
  }

 private:
  float* k_ = nullptr;
  float* v_ = nullptr;
  uint16_t* kb_ = nullptr;
  uint16_t* vb_ = nullptr;
  std::vector<uint32_t> stamp_;  // Block holds the current head: == epoch_.
  uint32_t epoch_ = 0;
  int64_t b_ = -1, n2_ = -1;
};

// Copies the G rows of `cols` elements of each member's token from `tile`
// (token-major, G rows per token) to dst, member after member.
template <typename T>
void GatherTokenRows(const T* tile, int64_t g, int64_t cols,
                     const NsaMember* members, int count, T* dst) {
  const size_t bytes = static_cast<size_t>(g * cols) * sizeof(T);
  for (int m = 0; m < count; ++m) {
    std::memcpy(dst + m * g * cols, tile + members[m].token * g * cols, bytes);
  }
}

// Adds each member's G rows of `cols` floats from `group` to its token's rows
// of `tile`.
inline void AddTokenRows(const float* group, int64_t g, int64_t cols,
                         const NsaMember* members, int count, float* tile) {
  for (int m = 0; m < count; ++m) {
    float* dst = tile + members[m].token * g * cols;
    const float* src = group + m * g * cols;
    for (int64_t i = 0; i < g * cols; ++i) dst[i] += src[i];
  }
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_NSA_SELECTION_H_
