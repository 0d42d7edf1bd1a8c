// Numbering of tile work items (batch, head, tile) when batches have
// different lengths (TND): item -> (b, n, first row). Query tiles are the
// forward's and the backward's dQ items (n a query head), kv tiles the
// backward's dK/dV items (n a kv head).
//
//   QueryTileItems items(plan.batches, n1, tile_q);
//   for (int64_t i = 0; i < items.size(); ++i) { auto it = items.at(i); }
//
// Items run in (b, n, tile) order. Immutable after construction.
#ifndef ATTNSERVE_CORE_SRC_KERNELS_WORK_ITEMS_H_
#define ATTNSERVE_CORE_SRC_KERNELS_WORK_ITEMS_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnserve/core/plan.h"

namespace attnserve::core {

enum class TileSide { kQuery, kKv };

class QueryTileItems {
 public:
  struct Item {
    int64_t b, n, i0;
  };

  QueryTileItems(const std::vector<BatchSpan>& batches, int64_t heads,
                 int64_t tile, TileSide side = TileSide::kQuery)
      : tile_q_(tile) {
    int64_t total = 0;
    for (const BatchSpan& s : batches) {
      first_.push_back(total);
      const int64_t rows = side == TileSide::kQuery ? s.s1 : s.s2;
      const int64_t tiles = (rows + tile - 1) / tile;
      tiles_.push_back(tiles);
      total += tiles * heads;
    }
    first_.push_back(total);
  }

  int64_t size() const { return first_.back(); }

  Item at(int64_t item) const {
    const size_t b = static_cast<size_t>(
        std::upper_bound(first_.begin(), first_.end(), item) - first_.begin() -
        1);
    const int64_t local = item - first_[b];
    const int64_t tiles = tiles_[b];
    return Item{static_cast<int64_t>(b), local / tiles,
                (local % tiles) * tile_q_};
  }

 private:
  int64_t tile_q_;
  std::vector<int64_t> first_;  // First item of each batch, then the total.
  std::vector<int64_t> tiles_;  // Tiles of each batch.
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_WORK_ITEMS_H_
