#include "runtime/dropout_bits.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "runtime/philox.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTNSERVE_DROPOUT_AVX2 1
#else
#define ATTNSERVE_DROPOUT_AVX2 0
#endif

namespace attnserve::core {
namespace {

// What the bulk kernels need of a seeded stream.
struct Stream {
  uint32_t key0;
  uint32_t key1;
  uint32_t offset_lo;
  uint32_t offset_hi;
  uint32_t threshold;
};

// Keep bytes of whole counters: keep[4*g + w] for counters counter0 + g,
// g < groups, word w. Written as one straight-line Philox per loop iteration
// over a chunk of counters, with the four words landing in separate arrays,
// so that the compiler vectorizes across counters; the words are
// interleaved into place afterwards.
void FillGroupsPortable(const Stream& s, uint64_t counter0, int64_t groups,
                        uint8_t* keep) {
  constexpr int kChunk = 64;
  for (int64_t done = 0; done < groups; done += kChunk) {
    const int m = static_cast<int>(std::min<int64_t>(kChunk, groups - done));
    const uint64_t base = counter0 + static_cast<uint64_t>(done);
    uint8_t w0[kChunk], w1[kChunk], w2[kChunk], w3[kChunk];
    for (int i = 0; i < m; ++i) {
      const uint64_t c = base + static_cast<uint64_t>(i);
      uint32_t c0 = static_cast<uint32_t>(c);
      uint32_t c1 = static_cast<uint32_t>(c >> 32);
      uint32_t c2 = s.offset_lo;
      uint32_t c3 = s.offset_hi;
      uint32_t k0 = s.key0;
      uint32_t k1 = s.key1;
#pragma GCC unroll 10
      for (int round = 0; round < kPhiloxRounds; ++round) {
        const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
        const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
        c0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
        c2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
        c1 = static_cast<uint32_t>(p1);
        c3 = static_cast<uint32_t>(p0);
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
      }
      w0[i] = c0 < s.threshold;
      w1[i] = c1 < s.threshold;
      w2[i] = c2 < s.threshold;
      w3[i] = c3 < s.threshold;
    }
    uint8_t* out = keep + 4 * done;
    for (int i = 0; i < m; ++i) {
      out[4 * i] = w0[i];
      out[4 * i + 1] = w1[i];
      out[4 * i + 2] = w2[i];
      out[4 * i + 3] = w3[i];
    }
  }
}

#if ATTNSERVE_DROPOUT_AVX2

bool CpuHasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}

// Broadcast operands of the AVX2 kernel.
struct Avx2Constants {
  __m256i round_key0[kPhiloxRounds];
  __m256i round_key1[kPhiloxRounds];
  __m256i m0;
  __m256i m1;
  __m256i offset_lo;
  __m256i offset_hi;
  __m256i lane;  // 0, 1, ..., 7.
  // u < T unsigned, as a signed compare with both sign bits flipped.
  __m256i flip;
  __m256i flipped_threshold;
};

// 32 x 32 -> 64-bit products of eight lanes: their high and low halves.
// _mm256_mul_epu32 multiplies the even lanes; the odd lanes are shifted
// down first and the halves blended back into place.
__attribute__((target("avx2"))) inline void MulHiLo(__m256i x, __m256i m,
                                                    __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Byte `byte` of each lane: 1 where the lane's word is kept, else 0.
__attribute__((target("avx2"))) inline __m256i KeptByte(const Avx2Constants& k,
                                                        __m256i u, int byte) {
  const __m256i all =
      _mm256_cmpgt_epi32(k.flipped_threshold, _mm256_xor_si256(u, k.flip));
  return _mm256_and_si256(all, _mm256_set1_epi32(1 << (8 * byte)));
}

// Keep bytes of the 8 * kWays counters from `base`: out[4*i + w] for counter
// base + i, word w. Each vector holds one word of eight consecutive
// counters; kWays independent vectors let one's multiplies overlap
// another's. (The compiler's own vectorization of the portable loop spends
// most of its time shuffling widened products; this is about 3x faster.)
template <int kWays>
__attribute__((target("avx2"))) inline void Avx2Step(const Avx2Constants& k,
                                                     uint64_t base,
                                                     uint8_t* out) {
  __m256i c0[kWays], c1[kWays], c2[kWays], c3[kWays];
  for (int w = 0; w < kWays; ++w) {
    const uint64_t first = base + static_cast<uint64_t>(8 * w);
    c0[w] =
        _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first)), k.lane);
    if (static_cast<uint32_t>(first) <= 0xFFFFFFF8u) {
      c1[w] = _mm256_set1_epi32(static_cast<int>(first >> 32));
    } else {  // The low word wraps inside these eight counters.
      alignas(32) uint32_t high[8];
      for (int l = 0; l < 8; ++l) {
        high[l] =
            static_cast<uint32_t>((first + static_cast<uint64_t>(l)) >> 32);
      }
      c1[w] = _mm256_load_si256(reinterpret_cast<const __m256i*>(high));
    }
    c2[w] = k.offset_lo;
    c3[w] = k.offset_hi;
  }
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int w = 0; w < kWays; ++w) {
      __m256i hi0, lo0, hi1, lo1;
      MulHiLo(c0[w], k.m0, &hi0, &lo0);
      MulHiLo(c2[w], k.m1, &hi1, &lo1);
      c0[w] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[w]), k.round_key0[r]);
      c2[w] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[w]), k.round_key1[r]);
      c1[w] = lo1;
      c3[w] = lo0;
    }
  }
  for (int w = 0; w < kWays; ++w) {
    // All-ones lanes for kept words; byte j of lane l is then word j of
    // counter l, which is exactly the output order.
    const __m256i bytes = _mm256_or_si256(
        _mm256_or_si256(KeptByte(k, c0[w], 0), KeptByte(k, c1[w], 1)),
        _mm256_or_si256(KeptByte(k, c2[w], 2), KeptByte(k, c3[w], 3)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * w), bytes);
  }
}

// Fill of a seeded stream, all of it in AVX2 steps; partial steps at either
// end go through a small buffer.
__attribute__((target("avx2"))) void FillAvx2(const Stream& s, uint64_t k0,
                                              int64_t n, uint8_t* keep) {
  Avx2Constants k;
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const uint32_t bumps = static_cast<uint32_t>(r);
    k.round_key0[r] =
        _mm256_set1_epi32(static_cast<int>(s.key0 + bumps * kPhiloxW0));
    k.round_key1[r] =
        _mm256_set1_epi32(static_cast<int>(s.key1 + bumps * kPhiloxW1));
  }
  k.m0 = _mm256_set1_epi64x(kPhiloxM0);
  k.m1 = _mm256_set1_epi64x(kPhiloxM1);
  k.offset_lo = _mm256_set1_epi32(static_cast<int>(s.offset_lo));
  k.offset_hi = _mm256_set1_epi32(static_cast<int>(s.offset_hi));
  k.lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  k.flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  k.flipped_threshold =
      _mm256_set1_epi32(static_cast<int>(s.threshold ^ 0x80000000u));

  uint64_t counter = k0 >> 2;
  int64_t c = 0;  // keep[c] is bit 4 * counter + (c == 0 ? k0 & 3 : 0).
  alignas(32) uint8_t partial[32];
  if ((k0 & 3) != 0) {
    const int64_t skip = static_cast<int64_t>(k0 & 3);
    Avx2Step<1>(k, counter, partial);
    c = std::min<int64_t>(32 - skip, n);
    std::memcpy(keep, partial + skip, static_cast<size_t>(c));
    counter += 8;
  }
  for (; n - c >= 64; c += 64, counter += 16) Avx2Step<2>(k, counter, keep + c);
  if (n - c >= 32) {
    Avx2Step<1>(k, counter, keep + c);
    c += 32;
    counter += 8;
  }
  if (c < n) {
    Avx2Step<1>(k, counter, partial);
    std::memcpy(keep + c, partial, static_cast<size_t>(n - c));
  }
}

#endif  // ATTNSERVE_DROPOUT_AVX2

}  // namespace

DropoutBits DropoutBits::FromMask(const uint8_t* packed_bits) {
  DropoutBits bits;
  bits.mask_ = packed_bits;
  return bits;
}

DropoutBits DropoutBits::FromSeed(uint64_t seed, uint64_t offset,
                                  float keep_prob) {
  DropoutBits bits;
  bits.key0_ = static_cast<uint32_t>(seed);
  bits.key1_ = static_cast<uint32_t>(seed >> 32);
  bits.offset_ = offset;
  constexpr double kTwo32 = 4294967296.0;
  const double t = std::floor(static_cast<double>(keep_prob) * kTwo32);
  if (t >= kTwo32) {
    bits.keep_all_ = true;
  } else if (t > 0) {  // False for NaN too.
    bits.threshold_ = static_cast<uint32_t>(t);
  }
  return bits;
}

void DropoutBits::Fill(uint64_t k0, int64_t n, uint8_t* keep) const {
  if (n <= 0) return;
  if (mask_ != nullptr) {
    FillFromMask(k0, n, keep);
  } else {
    FillFromSeed(k0, n, keep, /*allow_avx2=*/true);
  }
}

void DropoutBits::FillPortableForTesting(uint64_t k0, int64_t n,
                                         uint8_t* keep) const {
  if (n <= 0) return;
  if (mask_ != nullptr) {
    FillFromMask(k0, n, keep);
  } else {
    FillFromSeed(k0, n, keep, /*allow_avx2=*/false);
  }
}

void DropoutBits::FillFromMask(uint64_t k0, int64_t n, uint8_t* keep) const {
  const auto bit = [this](uint64_t k) -> uint8_t {
    return (mask_[k >> 3] >> (k & 7)) & 1;
  };
  int64_t c = 0;
  for (; c < n && ((k0 + static_cast<uint64_t>(c)) & 7) != 0; ++c) {
    keep[c] = bit(k0 + static_cast<uint64_t>(c));
  }
  // Whole bytes: eight bits each.
  const uint8_t* bytes = mask_ + ((k0 + static_cast<uint64_t>(c)) >> 3);
  const int64_t whole = (n - c) / 8;
  for (int64_t b = 0; b < whole; ++b) {
    const uint8_t byte = bytes[b];
    uint8_t* out = keep + c + 8 * b;
    for (int j = 0; j < 8; ++j) out[j] = (byte >> j) & 1;
  }
  for (c += 8 * whole; c < n; ++c) keep[c] = bit(k0 + static_cast<uint64_t>(c));
}

void DropoutBits::FillFromSeed(uint64_t k0, int64_t n, uint8_t* keep,
                               bool allow_avx2) const {
  if (keep_all_) {
    std::memset(keep, 1, static_cast<size_t>(n));
    return;
  }
  const Stream s{key0_, key1_, static_cast<uint32_t>(offset_),
                 static_cast<uint32_t>(offset_ >> 32), threshold_};
#if ATTNSERVE_DROPOUT_AVX2
  if (allow_avx2 && CpuHasAvx2()) {
    FillAvx2(s, k0, n, keep);
    return;
  }
#else
  (void)allow_avx2;
#endif
  // The words of one counter, for the partial groups at either end.
  const auto words = [&](uint64_t counter) {
    return Philox4x32x10(
        {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
         s.offset_lo, s.offset_hi},
        {s.key0, s.key1});
  };
  int64_t c = 0;
  if ((k0 & 3) != 0) {
    const std::array<uint32_t, 4> u = words(k0 >> 2);
    for (int w = static_cast<int>(k0 & 3); w < 4 && c < n; ++w, ++c) {
      keep[c] = u[w] < s.threshold;
    }
  }
  // From here on k0 + c is a multiple of 4 (or nothing is left).
  const uint64_t counter = (k0 + static_cast<uint64_t>(c)) >> 2;
  const int64_t groups = (n - c) / 4;
  FillGroupsPortable(s, counter, groups, keep + c);
  c += 4 * groups;
  if (c < n) {
    const std::array<uint32_t, 4> u =
        words((k0 + static_cast<uint64_t>(c)) >> 2);
    for (int w = 0; c < n; ++w, ++c) keep[c] = u[w] < s.threshold;
  }
}

}  // namespace attnserve::core
