#include "runtime/softmax_rows.h"

#include <cmath>
#include <cstring>

#include "attnserve/core/dtype.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTNSERVE_SOFTMAX_ROWS_X86 1
// GCC 12 warns that its own AVX-512 intrinsics' undefined-vector operands
// "may be used uninitialized" (a false positive inside the header).
#if !defined(__clang__)  // Clang has no -Wmaybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#else
#define ATTNSERVE_SOFTMAX_ROWS_X86 0
#endif

namespace attnserve::core {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
// 2^f on [-1/2, 1/2], relative error 2.3e-7 evaluated in fp32 (Horner):
// a least-squares fit weighted to minimax, constant term pinned to 1.
constexpr float kC1 = 0.6931469669149417f;
constexpr float kC2 = 0.24022119612345888f;
constexpr float kC3 = 0.055507135104985415f;
constexpr float kC4 = 0.009675548549848435f;
constexpr float kC5 = 0.0013276405555983516f;
// Results below 2^-126 (and -inf inputs) are 0.
constexpr float kMinExponent = -126.0f;

// 2^t, scalar, with the vector code's formulas.
float Exp2(float t) {
  if (!(t >= kMinExponent)) return std::isnan(t) ? t : 0.0f;
  const float k = std::nearbyint(t);
  const float f = t - k;
  float p = kC5;
  p = p * f + kC4;
  p = p * f + kC3;
  p = p * f + kC2;
  p = p * f + kC1;
  p = p * f + 1.0f;
  return std::ldexp(p, static_cast<int>(k));
}

float ScalarRow(const float* x, int64_t n, float a, float b,
                const uint8_t* keep, float keep_scale, uint16_t* out,
                int64_t n_pad) {
  float sum = 0.0f;
  for (int64_t c = 0; c < n; ++c) {
    const float p = Exp2(std::fma(x[c], a, -b));
    sum += p;
    const float kept =
        keep != nullptr ? p * (static_cast<float>(keep[c]) * keep_scale) : p;
    out[c] = FloatToBf16(kept);
  }
  for (int64_t c = n; c < n_pad; ++c) out[c] = 0;
  return sum;
}

void ScalarGradRow(const float* x, const float* dp, int64_t n, float a, float b,
                   float inv_sum, float rd, const uint8_t* keep,
                   float keep_scale, uint16_t* p_out, uint16_t* ds_out,
                   float* ds32, int64_t n_pad) {
  for (int64_t c = 0; c < n; ++c) {
    const float p = Exp2(std::fma(x[c], a, -b)) * inv_sum;
    const float factor =
        keep != nullptr ? static_cast<float>(keep[c]) * keep_scale : 1.0f;
    const float ds = p * (dp[c] * factor - rd);
    if (p_out != nullptr) p_out[c] = FloatToBf16(p * factor);
    ds_out[c] = FloatToBf16(ds);
    if (ds32 != nullptr) ds32[c] = ds;
  }
  for (int64_t c = n; c < n_pad; ++c) {
    if (p_out != nullptr) p_out[c] = 0;
    ds_out[c] = 0;
  }
}

#if ATTNSERVE_SOFTMAX_ROWS_X86

#define ATTNSERVE_BF16_TARGET \
  __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

ATTNSERVE_BF16_TARGET inline __m512 Exp2x16(__m512 t) {
  // Lanes at or above 2^-126, or NaN, are computed; the others are 0.
  const __mmask16 kept =
      _mm512_cmp_ps_mask(t, _mm512_set1_ps(kMinExponent), _CMP_NLT_UQ);
  const __m512 k =
      _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, k);
  __m512 p = _mm512_set1_ps(kC5);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kC4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kC3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kC2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kC1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(kept, p, k);
}

// Mask of the lanes [c, min(c + 16, n)).
inline __mmask16 LaneMask(int64_t c, int64_t n) {
  const int64_t left = n - c;
  if (left >= 16) return 0xffff;
  if (left <= 0) return 0;
  return static_cast<__mmask16>((1u << left) - 1u);
}

ATTNSERVE_BF16_TARGET inline __m512 KeepFactor(const uint8_t* keep, int64_t c,
                                               __mmask16 lanes,
                                               __m512 keep_scale) {
  const __m128i bytes = _mm_maskz_loadu_epi8(lanes, keep + c);
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)),
                       keep_scale);
}

ATTNSERVE_BF16_TARGET inline void StoreBf16(uint16_t* out, int64_t c,
                                            __mmask16 lanes, __m512 v) {
  const __m256bh h = _mm512_cvtneps_pbh(v);
  _mm256_mask_storeu_epi16(out + c, lanes, reinterpret_cast<const __m256i&>(h));
}

ATTNSERVE_BF16_TARGET inline void StoreBf16x32(uint16_t* out, __m512 lo,
                                               __m512 hi) {
  const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
  _mm512_storeu_si512(out, reinterpret_cast<const __m512i&>(h));
}

ATTNSERVE_BF16_TARGET float VectorRow(const float* x, int64_t n, float a,
                                      float b, const uint8_t* keep,
                                      float keep_scale, uint16_t* out,
                                      int64_t n_pad) {
  const __m512 va = _mm512_set1_ps(a), vnb = _mm512_set1_ps(-b);
  const __m512 vks = _mm512_set1_ps(keep_scale);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t c = 0;
  // Whole blocks of 32 values, then masked blocks of 16 up to n_pad.
  for (; c + 32 <= n; c += 32) {
    __m512 p0 = Exp2x16(_mm512_fmadd_ps(_mm512_loadu_ps(x + c), va, vnb));
    __m512 p1 = Exp2x16(_mm512_fmadd_ps(_mm512_loadu_ps(x + c + 16), va, vnb));
    acc0 = _mm512_add_ps(acc0, p0);
    acc1 = _mm512_add_ps(acc1, p1);
    if (keep != nullptr) {
      p0 = _mm512_mul_ps(p0, KeepFactor(keep, c, 0xffff, vks));
      p1 = _mm512_mul_ps(p1, KeepFactor(keep, c + 16, 0xffff, vks));
    }
    StoreBf16x32(out + c, p0, p1);
  }
  for (; c < n_pad; c += 16) {
    const __mmask16 lanes = LaneMask(c, n);
    __m512 p = _mm512_maskz_mov_ps(
        lanes,
        Exp2x16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, x + c), va, vnb)));
    acc0 = _mm512_add_ps(acc0, p);
    if (keep != nullptr) p = _mm512_mul_ps(p, KeepFactor(keep, c, lanes, vks));
    StoreBf16(out, c, LaneMask(c, n_pad), p);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// dS (and P') of 16 lanes; `lanes` masks the values past n (their dS is
// +0: 0 · (0 - rd) would be -0 for rd > 0).
struct GradLanes {
  __m512 p_kept, ds;
};

ATTNSERVE_BF16_TARGET inline GradLanes GradOf16(const float* x, const float* dp,
                                                const uint8_t* keep, int64_t c,
                                                __mmask16 lanes, __m512 va,
                                                __m512 vnb, __m512 vinv,
                                                __m512 vrd, __m512 vks) {
  const __m512 p = _mm512_maskz_mul_ps(
      lanes,
      Exp2x16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(lanes, x + c), va, vnb)),
      vinv);
  __m512 d = _mm512_maskz_loadu_ps(lanes, dp + c);
  GradLanes g{p, p};
  if (keep != nullptr) {
    const __m512 factor = KeepFactor(keep, c, lanes, vks);
    d = _mm512_mul_ps(d, factor);
    g.p_kept = _mm512_mul_ps(p, factor);
  }
  g.ds = _mm512_maskz_mul_ps(lanes, p, _mm512_sub_ps(d, vrd));
  return g;
}

ATTNSERVE_BF16_TARGET void VectorGradRow(const float* x, const float* dp,
                                         int64_t n, float a, float b,
                                         float inv_sum, float rd,
                                         const uint8_t* keep, float keep_scale,
                                         uint16_t* p_out, uint16_t* ds_out,
                                         float* ds32, int64_t n_pad) {
  const __m512 va = _mm512_set1_ps(a), vnb = _mm512_set1_ps(-b);
  const __m512 vinv = _mm512_set1_ps(inv_sum), vrd = _mm512_set1_ps(rd);
  const __m512 vks = _mm512_set1_ps(keep_scale);
  int64_t c = 0;
  // Whole blocks of 32 values, then masked blocks of 16 up to n_pad.
  for (; c + 32 <= n; c += 32) {
    const GradLanes g0 =
        GradOf16(x, dp, keep, c, 0xffff, va, vnb, vinv, vrd, vks);
    const GradLanes g1 =
        GradOf16(x, dp, keep, c + 16, 0xffff, va, vnb, vinv, vrd, vks);
    if (p_out != nullptr) StoreBf16x32(p_out + c, g0.p_kept, g1.p_kept);
    StoreBf16x32(ds_out + c, g0.ds, g1.ds);
    if (ds32 != nullptr) {
      _mm512_storeu_ps(ds32 + c, g0.ds);
      _mm512_storeu_ps(ds32 + c + 16, g1.ds);
    }
  }
  for (; c < n_pad; c += 16) {
    const __mmask16 lanes = LaneMask(c, n);
    const __mmask16 padded = LaneMask(c, n_pad);
    const GradLanes g =
        GradOf16(x, dp, keep, c, lanes, va, vnb, vinv, vrd, vks);
    if (p_out != nullptr) StoreBf16(p_out, c, padded, g.p_kept);
    StoreBf16(ds_out, c, padded, g.ds);
    if (ds32 != nullptr) _mm512_mask_storeu_ps(ds32 + c, lanes, g.ds);
  }
}

bool HasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

#endif  // ATTNSERVE_SOFTMAX_ROWS_X86

}  // namespace

namespace {

// shift · log2(e), kept finite: a fully masked row's shift is -FLT_MAX
// (its cells all -inf), and -inf - (-inf) would be NaN instead of 0.
float ShiftLog2(float shift) {
  const float b = shift * kLog2e;
  return b < -3.0e38f ? -3.0e38f : b;
}

}  // namespace

float SoftmaxExp(float x, float scale, float shift) {
  return Exp2(std::fma(x, scale * kLog2e, -ShiftLog2(shift)));
}

float SoftmaxRowToBf16(const float* x, int64_t n, float scale, float shift,
                       const uint8_t* keep, float keep_scale, uint16_t* out,
                       int64_t n_pad) {
  const float a = scale * kLog2e, b = ShiftLog2(shift);
#if ATTNSERVE_SOFTMAX_ROWS_X86
  if (HasAvx512Bf16()) {
    return VectorRow(x, n, a, b, keep, keep_scale, out, n_pad);
  }
#endif
  return ScalarRow(x, n, a, b, keep, keep_scale, out, n_pad);
}

void SoftmaxGradRowToBf16(const float* x, const float* dp, int64_t n,
                          float scale, float shift, float inv_sum, float rd,
                          const uint8_t* keep, float keep_scale,
                          uint16_t* p_out, uint16_t* ds_out, float* ds32,
                          int64_t n_pad) {
  const float a = scale * kLog2e, b = ShiftLog2(shift);
#if ATTNSERVE_SOFTMAX_ROWS_X86
  if (HasAvx512Bf16()) {
    VectorGradRow(x, dp, n, a, b, inv_sum, rd, keep, keep_scale, p_out, ds_out,
                  ds32, n_pad);
    return;
  }
#endif
  ScalarGradRow(x, dp, n, a, b, inv_sum, rd, keep, keep_scale, p_out, ds_out,
                ds32, n_pad);
}

}  // namespace attnserve::core
