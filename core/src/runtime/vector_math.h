// Vectorizable element-wise kernels of the softmax: plain loops that the
// compiler turns into AVX2 / AVX-512 code, chosen at run time (function
// multiversioning), with a baseline SSE2 fallback.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_

#include <cstdint>

namespace attnserve::core {

// x[i] = exp(x[i] - shift) for i < n; returns the sum of the results.
// Inputs at -inf give 0. Relative error below 2 ulp over the softmax range.
float ExpShiftSum(float* x, int64_t n, float shift);

// x[i] *= s.
void Scale(float* x, int64_t n, float s);

// Largest element (-inf for n = 0 or all -inf).
float Max(const float* x, int64_t n);

// Dot product in fp32 accumulation (8 independent partial sums).
float Dot(const float* a, const float* b, int64_t n);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_VECTOR_MATH_H_
