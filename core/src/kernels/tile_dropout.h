// Dropout of a score tile (docs/semantics.md, "Dropout"): the keep bits of its
// cells, from the request's drop_mask or generated from seed/offset, and the
// scaling P' = P * keep / keep_prob.
//
//   TileDropout drop(plan.dropout, drop_mask_bytes);
//   drop.Fill(b, n, span, i0, rows, j0, cols, keep);   // keep[r*cols + c]
//   TileDropout::Apply(row, keep + r * cols, cols, drop.inv_keep_prob());
//
// The bits depend only on the cell's index, never on tiling or threads.
// Thread-safe (const).
#ifndef ATTNSERVE_CORE_SRC_KERNELS_TILE_DROPOUT_H_
#define ATTNSERVE_CORE_SRC_KERNELS_TILE_DROPOUT_H_

#include <cstdint>

#include "attnserve/core/plan.h"
#include "runtime/dropout_bits.h"

namespace attnserve::core {

class TileDropout {
 public:
  TileDropout(const DropoutSpec& spec, const uint8_t* mask_data)
      : spec_(spec),
        bits_(
            spec.kind == DropoutSpec::Kind::kSeed
                ? DropoutBits::FromSeed(spec.seed, spec.offset, spec.keep_prob)
                : DropoutBits::FromMask(mask_data)),
        inv_keep_prob_(1.0f / spec.keep_prob) {}

  bool active() const { return spec_.kind != DropoutSpec::Kind::kNone; }
  float inv_keep_prob() const { return inv_keep_prob_; }

  // keep[r * cols + c] = keep bit of cell (i0 + r, j0 + c) of (b, n).
  void Fill(int64_t b, int64_t n, const BatchSpan& span, int64_t i0,
            int64_t rows, int64_t j0, int64_t cols, uint8_t* keep) const {
    const int64_t base = spec_.bit_base[static_cast<size_t>(b)];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t k0 = base + (n * span.s1 + i0 + r) * span.s2 + j0;
      bits_.Fill(static_cast<uint64_t>(k0), cols, keep + r * cols);
    }
  }

  // row[c] *= keep[c] / keep_prob.
  static void Apply(float* row, const uint8_t* keep, int64_t n,
                    float inv_keep_prob) {
    for (int64_t c = 0; c < n; ++c) {
      row[c] *= static_cast<float>(keep[c]) * inv_keep_prob;
    }
  }

 private:
  const DropoutSpec& spec_;
  DropoutBits bits_;
  float inv_keep_prob_;
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_KERNELS_TILE_DROPOUT_H_
