#include "runtime/vector_math.h"

#include <cmath>
#include <cstring>

namespace attnserve::core {
namespace {

// exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 (split in two
// constants for exactness), exp(r) by a degree-6 polynomial on
// |r| <= ln2/2. Inputs below -87.3 flush to 0, which the softmax needs for
// masked (-inf) and far-below-max scores.
inline float FastExp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  const bool underflow = x < -87.3f;
  x = x > 88.0f ? 88.0f : x;
  x = underflow ? 0.0f : x;
  const float k = std::nearbyint(x * kLog2e);
  const float r = (x - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // Scale by 2^k through the exponent bits (unsigned: k may be negative).
  uint32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<uint32_t>(static_cast<int32_t>(k)) << 23;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return underflow ? 0.0f : result;
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) float ExpShiftSum(
    float* x, int64_t n, float shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = FastExp(x[i] - shift);
  // Eight partial sums so that the reduction vectorizes without reassociation.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += x[i];
  for (int l = 0; l < 8; ++l) sum += acc[l];
  return sum;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Scale(
    float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) float Dot(
    const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int l = 0; l < 8; ++l) sum += acc[l];
  return sum;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) float Max(
    const float* x, int64_t n) {
  float acc[8];
  for (float& a : acc) a = -INFINITY;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  }
  float m = -INFINITY;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (int l = 0; l < 8; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

}  // namespace attnserve::core
