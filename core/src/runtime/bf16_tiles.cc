#include "runtime/bf16_tiles.h"

#include <cstring>

#include "attnserve/core/dtype.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTNSERVE_BF16_TILES_X86 1
#else
#define ATTNSERVE_BF16_TILES_X86 0
#endif

namespace attnserve::core {
namespace {

void ToBf16RowScalar(const float* src, int64_t cols, uint16_t* dst,
                     int64_t cols_p) {
  for (int64_t c = 0; c < cols; ++c) dst[c] = FloatToBf16(src[c]);
  for (int64_t c = cols; c < cols_p; ++c) dst[c] = 0;
}

#if ATTNSERVE_BF16_TILES_X86
// vcvtne2ps2bf16 rounds to nearest even like FloatToBf16, but treats
// subnormal inputs as zero (they are far below anything a bf16 product
// can resolve next to the row's other terms). The bf16 tile path runs only
// on CPUs with AVX-512 BF16, so this is its converter.
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) void
ToBf16RowAvx512(const float* src, int64_t cols, uint16_t* dst, int64_t cols_p) {
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16),
                                           _mm512_loadu_ps(src + c));
    _mm512_storeu_si512(dst + c, reinterpret_cast<const __m512i&>(v));
  }
  for (; c < cols_p; c += 16) {
    // Values past `cols` load as 0 and store as bf16 zeros.
    const int64_t left = cols - c;
    const __mmask16 load =
        left >= 16 ? 0xffff
                   : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1));
    const int64_t room = cols_p - c;
    const __mmask16 store =
        room >= 16 ? 0xffff : static_cast<__mmask16>((1u << room) - 1);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(load, src + c));
    _mm256_mask_storeu_epi16(dst + c, store,
                             reinterpret_cast<const __m256i&>(v));
  }
}

bool HasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}
#endif

}  // namespace

void ToBf16Padded(const float* src, int64_t lds, int64_t rows, int64_t cols,
                  uint16_t* dst, int64_t ldd, int64_t rows_p, int64_t cols_p) {
#if ATTNSERVE_BF16_TILES_X86
  if (HasAvx512Bf16()) {
    for (int64_t r = 0; r < rows; ++r) {
      ToBf16RowAvx512(src + r * lds, cols, dst + r * ldd, cols_p);
    }
    ZeroBf16Rows(dst, ldd, rows, rows_p, cols_p);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    ToBf16RowScalar(src + r * lds, cols, dst + r * ldd, cols_p);
  }
  ZeroBf16Rows(dst, ldd, rows, rows_p, cols_p);
}

#if ATTNSERVE_BF16_TILES_X86
namespace {

// dst[c][r] = src[r][c] for a 16 x 16 block of 16-bit values: unpacks of
// 16-, 32- and 64-bit pairs transpose each 128-bit lane's 8 x 8 quarters,
// then the lanes are recombined (64 shuffles for 256 values).
__attribute__((target("avx2"))) void Transpose16x16(const uint16_t* src,
                                                    int64_t lds, uint16_t* dst,
                                                    int64_t ldd) {
  __m256i r[16], t[16];
  for (int i = 0; i < 16; ++i) {
    r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i * lds));
  }
  for (int i = 0; i < 16; i += 2) {  // Row pairs, 16-bit interleave.
    t[i] = _mm256_unpacklo_epi16(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi16(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // Row quads: columns 0-1, 2-3, 4-5, 6-7.
    r[i] = _mm256_unpacklo_epi32(t[i], t[i + 2]);
    r[i + 1] = _mm256_unpackhi_epi32(t[i], t[i + 2]);
    r[i + 2] = _mm256_unpacklo_epi32(t[i + 1], t[i + 3]);
    r[i + 3] = _mm256_unpackhi_epi32(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8) {  // Row octets: one column per register.
    for (int k = 0; k < 4; ++k) {
      t[h + 2 * k] = _mm256_unpacklo_epi64(r[h + k], r[h + 4 + k]);
      t[h + 2 * k + 1] = _mm256_unpackhi_epi64(r[h + k], r[h + 4 + k]);
    }
  }
  for (int c = 0; c < 8; ++c) {  // Rows 0-7 and 8-15 of columns c, c + 8.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c * ldd),
                        _mm256_permute2x128_si256(t[c], t[8 + c], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (c + 8) * ldd),
                        _mm256_permute2x128_si256(t[c], t[8 + c], 0x31));
  }
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

}  // namespace
#endif

void TransposeBf16(const uint16_t* src, int64_t lds, int64_t rows, int64_t cols,
                   uint16_t* dst, int64_t ldd, int64_t rows_p) {
  // Blocks of 16 x 16 keep both sides' lines in L1.
  constexpr int64_t kBlock = 16;
#if ATTNSERVE_BF16_TILES_X86
  const bool vector = HasAvx2();
#endif
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = r0 + kBlock < rows ? r0 + kBlock : rows;
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t c1 = c0 + kBlock < cols ? c0 + kBlock : cols;
#if ATTNSERVE_BF16_TILES_X86
      if (vector && r1 - r0 == kBlock && c1 - c0 == kBlock) {
        Transpose16x16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
        continue;
      }
#endif
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * lds + c];
      }
    }
  }
  if (rows_p > rows) {
    for (int64_t c = 0; c < cols; ++c) {
      std::memset(dst + c * ldd + rows, 0,
                  static_cast<size_t>(rows_p - rows) * sizeof(uint16_t));
    }
  }
}

void TransposeScaled(const float* src, int64_t lds, int64_t rows, int64_t cols,
                     float scale, float* dst, int64_t ldd) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = r0 + kBlock < rows ? r0 + kBlock : rows;
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t c1 = c0 + kBlock < cols ? c0 + kBlock : cols;
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) {
          dst[c * ldd + r] = scale * src[r * lds + c];
        }
      }
    }
  }
}

void ZeroBf16Rows(uint16_t* dst, int64_t ld, int64_t rows, int64_t rows_p,
                  int64_t cols) {
  for (int64_t r = rows; r < rows_p; ++r) {
    std::memset(dst + r * ld, 0, static_cast<size_t>(cols) * sizeof(uint16_t));
  }
}

}  // namespace attnserve::core
