// Element-wise kernels of the softmax. The exponential and the maximum are
// written with AVX-512 and AVX2(+FMA) intrinsics plus a scalar fallback,
// chosen once at run time from the CPU; the others are plain loops that the
// compiler turns into AVX2 / AVX-512 code (function multiversioning) with an
// SSE2 baseline.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_

#include <cstdint>

namespace attnserve::core {

// Instruction sets the exponential has an implementation for.
enum class SimdLevel { kScalar, kAvx2, kAvx512 };

// The best level this CPU runs (detected once).
SimdLevel BestSimdLevel();
const char* SimdLevelName(SimdLevel level);

// x[i] = exp(x[i] - shift) for i < n; returns the sum of the results.
// Inputs at -inf give 0. Relative error below 2 ulp over the softmax range.
float ExpShiftSum(float* x, int64_t n, float shift);

// ExpShiftSum at a given level (tests; the level must not exceed
// BestSimdLevel()).
float ExpShiftSumAt(SimdLevel level, float* x, int64_t n, float shift);

// x[i] *= s.
void Scale(float* x, int64_t n, float s);

// Largest element (-inf for n = 0 or all -inf); NaNs are skipped.
float Max(const float* x, int64_t n);
float MaxAt(SimdLevel level, const float* x, int64_t n);  // For tests.

// Dot product in fp32 accumulation (8 independent partial sums).
float Dot(const float* a, const float* b, int64_t n);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_
