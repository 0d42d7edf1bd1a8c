// Test tensors: seeded random data, and moving canonical double arrays in and
// out of core::HostTensor in any padded layout and compute dtype.
//
// Canonical order is row-major [B][N][S][D] (what the reference uses); the
// kernel sees the same numbers in BSH [B,S,N*D], SBH [S,B,N*D],
// BSND [B,S,N,D] or BNSD [B,N,S,D], stored as FLOAT32, FLOAT16 or BFLOAT16.
//
//   Bnsd shape{/*b=*/2, /*n=*/4, /*s=*/37, /*d=*/40};
//   std::vector<double> q = RoundToDType(
//       RandomUniform(shape.size(), /*seed=*/1), DType::kFloat16);
//   HostTensor t = PackBnsd(q, shape, Layout::kBSH, DType::kFloat16);
//   absl::StatusOr<std::vector<double>> back =
//       UnpackBnsd(t, shape, Layout::kBSH, DType::kFloat16);  // == q
//
// Rounding inputs with RoundToDType first makes the reference see exactly the
// values the kernel reads. All functions are pure and thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_TENSORS_H_
#define ATTNSERVE_TESTS_TESTING_TENSORS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"

namespace attnserve::test {

// The four canonical dimensions of one q/k/v-like tensor.
struct Bnsd {
  int64_t b = 1;
  int64_t n = 1;
  int64_t s = 1;
  int64_t d = 1;

  size_t size() const { return static_cast<size_t>(b * n * s * d); }
};

// The tensor shape of `dims` in `layout` (BSH, SBH, BSND or BNSD).
std::vector<int64_t> LayoutShape(core::Layout layout, const Bnsd& dims);

// Element offset of (b, n, s, d) in a `layout` tensor of `dims`.
int64_t LayoutOffset(core::Layout layout, const Bnsd& dims, int64_t b,
                     int64_t n, int64_t s, int64_t d);

// `count` values uniform in [lo, hi), reproducible from `seed`.
std::vector<double> RandomUniform(size_t count, uint64_t seed, double lo = -1.0,
                                  double hi = 1.0);

// Each value rounded to float32 and then to `dtype` (FLOAT32, FLOAT16 or
// BFLOAT16) with the core's conversion, returned as double.
std::vector<double> RoundToDType(const std::vector<double>& values,
                                 core::DType dtype);

// Packs canonical [B][N][S][D] `values` into a tensor of `layout`/`dtype`.
// Values are narrowed through float32 with core::FromFloat.
core::HostTensor PackBnsd(const std::vector<double>& values, const Bnsd& dims,
                          core::Layout layout, core::DType dtype);

// Inverse of PackBnsd. Fails when the tensor's dtype is not `dtype` or its
// shape is not LayoutShape(layout, dims).
absl::StatusOr<std::vector<double>> UnpackBnsd(const core::HostTensor& tensor,
                                               const Bnsd& dims,
                                               core::Layout layout,
                                               core::DType dtype);

// A row-major tensor of `shape` holding `values` (FLOAT32/FLOAT16/BFLOAT16).
core::HostTensor PackFlat(const std::vector<double>& values,
                          std::vector<int64_t> shape, core::DType dtype);

// The elements of a FLOAT32/FLOAT16/BFLOAT16 tensor in row-major order.
// Fails when the dtype is not `dtype`, the shape is not `shape`, or the byte
// size does not match.
absl::StatusOr<std::vector<double>> UnpackFlat(
    const core::HostTensor& tensor, const std::vector<int64_t>& shape,
    core::DType dtype);

// A BOOL or UINT8 tensor of `shape` holding `values` (one byte each).
core::HostTensor PackBytes(const std::vector<uint8_t>& values,
                           std::vector<int64_t> shape, core::DType dtype);

// A FLOAT32 [B,N,S,8] softmax_max/sum tensor holding `rows` ([B][N][S])
// repeated in all 8 lanes.
core::HostTensor PackSoftmaxStat(const std::vector<double>& rows, int64_t b,
                                 int64_t n, int64_t s);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_TENSORS_H_
