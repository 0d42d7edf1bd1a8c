#include "runtime/vector_math.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTNSERVE_VECTOR_MATH_X86 1
// GCC 12 warns that its own AVX-512 intrinsics' undefined-vector operands
// "may be used uninitialized" (a false positive inside the header).
#if !defined(__clang__)  // Clang has no -Wmaybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#else
#define ATTNSERVE_VECTOR_MATH_X86 0
#endif

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

float ExpShiftSumScalar(float* x, int64_t n, float shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = FastExp(x[i] - shift);
  // Eight partial sums, the lane order of the vector versions.
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

#if ATTNSERVE_VECTOR_MATH_X86

// The same range reduction and polynomial as FastExp, eight lanes at a time
// with fused multiply-adds.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);  // NaN stays NaN.
  x = _mm256_andnot_ps(underflow, x);           // -inf lanes must not reach the
                                                // integer conversion.
  const __m256 k =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
  const __m256 result =
      _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), scale));
  return _mm256_andnot_ps(underflow, result);
}

__attribute__((target("avx2,fma"))) float ExpShiftSumAvx2(float* x, int64_t n,
                                                          float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  if (i < n) {  // The tail through a padded block (-inf pads give 0).
    alignas(32) float tail[8];
    const int64_t left = n - i;
    for (int l = 0; l < 8; ++l) tail[l] = l < left ? x[i + l] : -INFINITY;
    _mm256_store_ps(tail, Exp8(_mm256_sub_ps(_mm256_load_ps(tail), s)));
    for (int64_t l = 0; l < left; ++l) {
      x[i + l] = tail[l];
      sum += tail[l];
    }
  }
  for (float l : lanes) sum += l;
  return sum;
}

__attribute__((target("avx512f"))) inline __m512 Exp16(__m512 x) {
  // Lanes at or above -87.3 or NaN are computed; NaN stays NaN.
  const __mmask16 kept =
      _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);
  x = _mm512_maskz_mov_ps(kept, _mm512_min_ps(_mm512_set1_ps(88.0f), x));
  const __m512 k = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i scale = _mm512_slli_epi32(_mm512_cvtps_epi32(k), 23);
  const __m512 result =
      _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), scale));
  return _mm512_maskz_mov_ps(kept, result);
}

__attribute__((target("avx512f"))) float ExpShiftSumAvx512(float* x, int64_t n,
                                                           float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {  // Masked tail: the lanes past n are neither read nor written.
    const __mmask16 tail =
        static_cast<__mmask16>((1u << static_cast<unsigned>(n - i)) - 1u);
    const __m512 e = _mm512_maskz_mov_ps(
        tail, Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), s)));
    _mm512_mask_storeu_ps(x + i, tail, e);
    acc = _mm512_add_ps(acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

#endif  // ATTNSERVE_VECTOR_MATH_X86

float MaxScalar(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

#if ATTNSERVE_VECTOR_MATH_X86

// max_ps(x, acc) returns acc when x is NaN: NaNs are skipped, as in
// MaxScalar.
__attribute__((target("avx2"))) float MaxAvx2(const float* x, int64_t n) {
  __m256 acc = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(_mm256_loadu_ps(x + i), acc);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float m = MaxScalar(x + i, n - i);
  for (float l : lanes) m = l > m ? l : m;
  return m;
}

__attribute__((target("avx512f"))) float MaxAvx512(const float* x, int64_t n) {
  __m512 acc0 = _mm512_set1_ps(-INFINITY), acc1 = acc0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_max_ps(_mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), acc1);
  }
  if (i + 16 <= n) {
    acc0 = _mm512_max_ps(_mm512_loadu_ps(x + i), acc0);
    i += 16;
  }
  if (i < n) {  // Masked tail: the lanes past n stay -inf.
    const __mmask16 tail =
        static_cast<__mmask16>((1u << static_cast<unsigned>(n - i)) - 1u);
    acc1 = _mm512_max_ps(
        _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, x + i), acc1);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(acc0, acc1));
}

#endif  // ATTNSERVE_VECTOR_MATH_X86

using MaxFn = float (*)(const float*, int64_t);

MaxFn MaxOf(SimdLevel level) {
#if ATTNSERVE_VECTOR_MATH_X86
  if (level == SimdLevel::kAvx512) return MaxAvx512;
  if (level == SimdLevel::kAvx2) return MaxAvx2;
#endif
  (void)level;
  return MaxScalar;
}

using ExpShiftSumFn = float (*)(float*, int64_t, float);

ExpShiftSumFn ExpShiftSumOf(SimdLevel level) {
#if ATTNSERVE_VECTOR_MATH_X86
  if (level == SimdLevel::kAvx512) return ExpShiftSumAvx512;
  if (level == SimdLevel::kAvx2) return ExpShiftSumAvx2;
#endif
  (void)level;
  return ExpShiftSumScalar;
}

}  // namespace

SimdLevel BestSimdLevel() {
  static const SimdLevel level = [] {
#if ATTNSERVE_VECTOR_MATH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return SimdLevel::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return SimdLevel::kAvx2;
    }
#endif
    return SimdLevel::kScalar;
  }();
  return level;
}

const char* SimdLevelName(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512:
      return "avx512";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kScalar:
      break;
  }
  return "scalar";
}

float ExpShiftSum(float* x, int64_t n, float shift) {
  static const ExpShiftSumFn fn = ExpShiftSumOf(BestSimdLevel());
  return fn(x, n, shift);
}

float ExpShiftSumAt(SimdLevel level, float* x, int64_t n, float shift) {
  return ExpShiftSumOf(level)(x, n, shift);
}

float MaxAt(SimdLevel level, const float* x, int64_t n) {
  return MaxOf(level)(x, n);
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

float Max(const float* x, int64_t n) {
  static const MaxFn fn = MaxOf(BestSimdLevel());
  return fn(x, n);
}

}  // namespace attnserve::core
