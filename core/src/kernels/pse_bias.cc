#include "kernels/pse_bias.h"

#include <cmath>

#include "attnserve/core/dtype.h"

namespace attnserve::core {
namespace {

constexpr int64_t kCompressedRows = 1024;

// Where bias(i, j) of a (b, n) plane lives: row `row`, column j + shift;
// cells with column >= cols_ read nothing (compressed, above the diagonal).
struct RowSource {
  int64_t row;
  int64_t shift;
};

RowSource SourceOf(PseSpec::Rows rows, int64_t sq, int64_t i) {
  switch (rows) {
    case PseSpec::Rows::kFull:
      return {i, 0};
    case PseSpec::Rows::kBroadcast:
      return {0, 0};
    case PseSpec::Rows::kCompressed:
      if (i >= sq - kCompressedRows) return {i - (sq - kCompressedRows), 0};
      return {kCompressedRows - 1, sq - 1 - i};
  }
  return {i, 0};
}

float SlopeBias(PseSpec::Kind kind, float slope, int64_t rel) {
  const float dist = static_cast<float>(rel < 0 ? -rel : rel);
  return kind == PseSpec::Kind::kAlibi ? -slope * dist
                                       : -slope * std::sqrt(dist);
}

}  // namespace

PseBias::PseBias(const PseSpec& spec, const void* data)
    : spec_(spec), data_(data) {
  rows_ = spec.shape.size() == 4 ? spec.shape[2] : 1;
  cols_ = spec.shape.size() == 4 ? spec.shape[3] : 1;
}

void PseBias::Add(int64_t b, int64_t n, int64_t sq, int64_t i0, int64_t rows,
                  int64_t j0, int64_t cols, float* tile, int64_t ld,
                  float* row) const {
  if (generated()) {
    const float slope =
        static_cast<const float*>(data_)[b * spec_.stride_b + n];
    for (int64_t r = 0; r < rows; ++r) {
      float* s = tile + r * ld;
      const int64_t base = (j0 + spec_.kv_start) - (i0 + r + spec_.q_start);
      for (int64_t c = 0; c < cols; ++c) {
        s[c] += SlopeBias(spec_.kind, slope, base + c);
      }
    }
    return;
  }
  const size_t item = ItemSize(spec_.dtype);
  const auto* bytes = static_cast<const char*>(data_);
  const int64_t plane = b * spec_.stride_b + n * spec_.stride_n;
  for (int64_t r = 0; r < rows; ++r) {
    const RowSource src = SourceOf(spec_.rows, sq, i0 + r);
    const int64_t first = j0 + src.shift;
    const int64_t n_read = std::min<int64_t>(cols, cols_ - first);
    if (n_read <= 0) continue;
    const int64_t elem = plane + src.row * spec_.stride_row + first;
    ToFloat(spec_.dtype, bytes + static_cast<size_t>(elem) * item, row,
            static_cast<size_t>(n_read));
    float* s = tile + r * ld;
    const float coeff = spec_.coeff;
    for (int64_t c = 0; c < n_read; ++c) s[c] += coeff * row[c];
  }
}

int64_t PseBias::PartialPlaneFloats() const {
  return generated() ? 1 : rows_ * cols_;
}

void PseBias::AccumulateGrad(int64_t b, int64_t n, int64_t sq, int64_t i0,
                             int64_t rows, int64_t j0, int64_t cols,
                             const float* ds, int64_t ld, float* plane,
                             double* slope_grad) const {
  if (generated()) {
    (void)b;
    (void)n;
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* d = ds + r * ld;
      const int64_t base = (j0 + spec_.kv_start) - (i0 + r + spec_.q_start);
      // d bias / d slope = bias / slope.
      for (int64_t c = 0; c < cols; ++c) {
        sum += static_cast<double>(d[c]) *
               static_cast<double>(SlopeBias(spec_.kind, 1.0f, base + c));
      }
    }
    *slope_grad += sum;
    return;
  }
  const float coeff = spec_.coeff;
  for (int64_t r = 0; r < rows; ++r) {
    const RowSource src = SourceOf(spec_.rows, sq, i0 + r);
    const int64_t first = j0 + src.shift;
    const int64_t n_read = std::min<int64_t>(cols, cols_ - first);
    if (n_read <= 0) continue;
    float* g = plane + src.row * cols_ + first;
    const float* d = ds + r * ld;
    for (int64_t c = 0; c < n_read; ++c) g[c] += coeff * d[c];
  }
}

}  // namespace attnserve::core
