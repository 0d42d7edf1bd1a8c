// FLOAT16 / BFLOAT16 / FLOAT8 conversions against hand-computed bit patterns
// and independent models in double (rounding from the value; FLOAT8 codes
// decoded from their fields).
#include "attnserve/core/dtype.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/param_names.h"

namespace attnserve::core {
namespace {

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
uint32_t ToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

bool IsHalfNan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
bool IsBf16Nan(uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x7F); }

// Independent model: the fp16 bit pattern nearest to finite `x` (ties to
// even), built from the value rather than from float bits.
uint16_t ModelHalf(double x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  // Half-way between the largest finite half (65504) and 2^16 rounds up.
  if (a >= 65520.0) return sign | 0x7C00;
  int exp;
  std::frexp(a, &exp);  // a = m * 2^exp, m in [0.5, 1).
  // Quantum: 2^(e - 10) for normals (e = exp - 1 >= -14), 2^-24 below.
  const int e = std::max(exp - 1, -14);
  const double quantum = std::ldexp(1.0, e - 10);
  const double steps = std::nearbyint(a / quantum);  // Ties to even.
  const double r = steps * quantum;
  if (r == 0) return sign;
  int rexp;
  std::frexp(r, &rexp);
  if (rexp - 1 < -14) {  // Subnormal: mantissa counts 2^-24.
    return sign | static_cast<uint16_t>(std::ldexp(r, 24));
  }
  const int biased = rexp - 1 + 15;
  const double mant = std::ldexp(r, -(rexp - 1)) - 1.0;  // [0, 1).
  return sign | static_cast<uint16_t>(biased << 10) |
         static_cast<uint16_t>(std::ldexp(mant, 10));
}

// Independent model of bf16 rounding: keep 8 significant bits, ties to even,
// with fp32's exponent range (subnormal quantum 2^-133).
uint16_t ModelBf16(double x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  int exp;
  std::frexp(a, &exp);
  const int e = std::max(exp - 1, -126);
  const double quantum = std::ldexp(1.0, e - 7);
  const double r = std::nearbyint(a / quantum) * quantum;
  if (r >= std::ldexp(1.0, 128)) return sign | 0x7F80;
  // r is representable in fp32; its top 16 bits are the bf16 pattern.
  return sign | static_cast<uint16_t>(ToBits(static_cast<float>(r)) >> 16);
}

TEST(HalfTest, ConvertsExactValuesToKnownBits) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);         // Largest finite.
  EXPECT_EQ(FloatToHalf(0x1p-14f), 0x0400);         // Smallest normal.
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);         // Smallest subnormal.
  EXPECT_EQ(FloatToHalf(1023 * 0x1p-24f), 0x03FF);  // Largest subnormal.
  EXPECT_EQ(FloatToHalf(-0x1p-24f), 0x8001);
}

TEST(HalfTest, RoundsToNearestWithTiesToEven) {
  EXPECT_EQ(FloatToHalf(1.0f / 3.0f), 0x3555);  // 0.333251953125.
  // 1 + 2^-11 is half-way between 0x3C00 (even) and 0x3C01.
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3C00);
  // 1 + 3 * 2^-11 is half-way between 0x3C01 and 0x3C02 (even).
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3C02);
  // Just above a tie rounds up.
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-12f), 0x3C00);
  // A tie that carries into the exponent: 2 - 2^-11 -> 2.0.
  EXPECT_EQ(FloatToHalf(2.0f - 0x1p-11f), 0x4000);
  EXPECT_EQ(FloatToHalf(-(1.0f + 3 * 0x1p-11f)), 0xBC02);
}

TEST(HalfTest, RoundsSubnormalsWithTiesToEven) {
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);  // Tie between 0 and 2^-24.
  EXPECT_EQ(FloatToHalf(0x1.000002p-25f), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);  // 1.5 quanta -> 2.
  EXPECT_EQ(FloatToHalf(5 * 0x1p-25f), 0x0002);  // 2.5 quanta -> 2.
  EXPECT_EQ(FloatToHalf(0x1p-26f), 0x0000);
  // 1023.5 quanta rounds to 1024 = the smallest normal.
  EXPECT_EQ(FloatToHalf(1023.5f * 0x1p-24f), 0x0400);
  // fp32 subnormals are far below fp16's range.
  EXPECT_EQ(FloatToHalf(FromBits(0x00000001)), 0x0000);
  EXPECT_EQ(FloatToHalf(-FLT_MIN), 0x8000);
}

TEST(HalfTest, OverflowsToInfinity) {
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);  // Below the half-way point.
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // Tie rounds to even: 2^16.
  EXPECT_EQ(FloatToHalf(1e6f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-1e6f), 0xFC00);
  EXPECT_EQ(FloatToHalf(FLT_MAX), 0x7C00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
}

TEST(HalfTest, KeepsNanNan) {
  EXPECT_TRUE(IsHalfNan(FloatToHalf(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNan(FloatToHalf(-std::numeric_limits<float>::quiet_NaN())));
  // Payload only in the low mantissa bits, which fp16 drops.
  EXPECT_TRUE(IsHalfNan(FloatToHalf(FromBits(0x7F800001))));
  EXPECT_TRUE(IsHalfNan(FloatToHalf(FromBits(0xFF800001))));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0xFFFF)));
}

TEST(HalfTest, WidensKnownBitsExactly) {
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x8001), -0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x03FF), 1023 * 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x0400), 0x1p-14f);
  EXPECT_EQ(ToBits(HalfToFloat(0x8000)), 0x80000000u);
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
}

TEST(HalfTest, EveryNonNanPatternRoundTrips) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if (IsHalfNan(bits)) continue;
    ASSERT_EQ(FloatToHalf(HalfToFloat(bits)), bits) << std::hex << h;
  }
}

TEST(HalfTest, MatchesIndependentRoundingModel) {
  // A stride through all finite fp32 bit patterns, plus points just around
  // every fp16 tie (mid-points between neighbouring halves).
  for (uint64_t bits = 0; bits < 0x7F800000u; bits += 4099) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = FromBits(static_cast<uint32_t>(bits) | sign);
      ASSERT_EQ(FloatToHalf(f), ModelHalf(f))
          << "float bits " << std::hex << (bits | sign);
    }
  }
  for (uint16_t h = 0; h < 0x7BFF; ++h) {
    const double mid =
        (static_cast<double>(HalfToFloat(h)) + HalfToFloat(h + 1)) / 2;
    const float tie = static_cast<float>(mid);  // Exact: 12 bits.
    ASSERT_EQ(FloatToHalf(tie), ModelHalf(tie)) << "tie above " << h;
    const float below = std::nextafter(tie, 0.0f);
    const float above = std::nextafter(tie, 1e9f);
    ASSERT_EQ(FloatToHalf(below), h) << "just below the tie above " << h;
    ASSERT_EQ(FloatToHalf(above), h + 1) << "just above the tie above " << h;
  }
}

TEST(Bf16Test, ConvertsKnownValues) {
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBf16(1.0f / 3.0f), 0x3EAB);  // 0x3EAAAAAB rounds up.
  EXPECT_EQ(Bf16ToFloat(0x3EAB), 0.333984375f);
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(ToBits(Bf16ToFloat(0x1234)), 0x12340000u);
}

TEST(Bf16Test, RoundsToNearestWithTiesToEven) {
  EXPECT_EQ(FloatToBf16(FromBits(0x3F808000)), 0x3F80);  // Tie, even below.
  EXPECT_EQ(FloatToBf16(FromBits(0x3F818000)), 0x3F82);  // Tie, even above.
  EXPECT_EQ(FloatToBf16(FromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(FloatToBf16(FromBits(0x3F807FFF)), 0x3F80);
  EXPECT_EQ(FloatToBf16(FromBits(0x3FFF8000)), 0x4000);  // Carry to exponent.
  EXPECT_EQ(FloatToBf16(FromBits(0xBF818000)), 0xBF82);
}

TEST(Bf16Test, RoundsSubnormals) {
  EXPECT_EQ(FloatToBf16(FromBits(0x00000001)), 0x0000);
  EXPECT_EQ(FloatToBf16(FromBits(0x00008000)), 0x0000);  // Tie to even 0.
  EXPECT_EQ(FloatToBf16(FromBits(0x00008001)), 0x0001);
  EXPECT_EQ(FloatToBf16(FromBits(0x00018000)), 0x0002);  // Tie to even.
  EXPECT_EQ(FloatToBf16(FromBits(0x007FFFFF)), 0x0080);  // Up to FLT_MIN.
  EXPECT_EQ(ToBits(Bf16ToFloat(0x0001)), 0x00010000u);
  EXPECT_EQ(ToBits(Bf16ToFloat(0x8001)), 0x80010000u);
}

TEST(Bf16Test, OverflowsToInfinityAndKeepsNan) {
  EXPECT_EQ(FloatToBf16(FLT_MAX), 0x7F80);  // 0x7F7FFFFF rounds up.
  EXPECT_EQ(FloatToBf16(-FLT_MAX), 0xFF80);
  EXPECT_EQ(FloatToBf16(FromBits(0x7F7F7FFF)), 0x7F7F);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(std::numeric_limits<float>::quiet_NaN())));
  // Rounding or truncating these payloads naively would give infinity.
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(FromBits(0x7F800001))));
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(FromBits(0x7FFFFFFF))));
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(FromBits(0xFF808000))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(0x7FC0)));
  EXPECT_EQ(Bf16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
}

TEST(Bf16Test, EveryNonNanPatternRoundTrips) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    if (IsBf16Nan(bits)) continue;
    ASSERT_EQ(FloatToBf16(Bf16ToFloat(bits)), bits) << std::hex << b;
  }
}

TEST(Bf16Test, MatchesIndependentRoundingModel) {
  for (uint64_t bits = 0; bits < 0x7F800000u; bits += 4099) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = FromBits(static_cast<uint32_t>(bits) | sign);
      ASSERT_EQ(FloatToBf16(f), ModelBf16(f))
          << "float bits " << std::hex << (bits | sign);
    }
  }
}

class BulkConversionTest : public ::testing::TestWithParam<DType> {};

TEST_P(BulkConversionTest, FromFloatMatchesScalarPath) {
  const DType dtype = GetParam();
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-70000.0f, 70000.0f);
  // Odd length to reach any vector tail; special values at both ends.
  std::vector<float> src(1001);
  for (float& x : src)
    x = dist(gen) * std::ldexp(1.0f, -static_cast<int>(gen() % 40));
  src[0] = 65520.0f;
  src[1] = 0x1p-25f;
  src[2] = -std::numeric_limits<float>::infinity();
  src[999] = 1.0f + 0x1p-11f;
  src[1000] = std::numeric_limits<float>::quiet_NaN();
  std::vector<unsigned char> dst(src.size() * ItemSize(dtype));
  FromFloat(dtype, src.data(), dst.data(), src.size());
  std::vector<float> back(src.size());
  ToFloat(dtype, dst.data(), back.data(), back.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (dtype == DType::kFloat32) {
      uint32_t got;
      std::memcpy(&got, &dst[i * 4], 4);
      ASSERT_EQ(got, ToBits(src[i])) << i;
      continue;
    }
    uint16_t got;
    std::memcpy(&got, &dst[i * 2], 2);
    if (std::isnan(src[i])) {
      ASSERT_TRUE(dtype == DType::kFloat16 ? IsHalfNan(got) : IsBf16Nan(got));
      ASSERT_TRUE(std::isnan(back[i]));
      continue;
    }
    const uint16_t want =
        dtype == DType::kFloat16 ? FloatToHalf(src[i]) : FloatToBf16(src[i]);
    ASSERT_EQ(got, want) << "element " << i << " = " << src[i];
    const float widened =
        dtype == DType::kFloat16 ? HalfToFloat(got) : Bf16ToFloat(got);
    if (std::isnan(widened)) {
      ASSERT_TRUE(std::isnan(back[i])) << i;
    } else {
      ASSERT_EQ(back[i], widened) << i;
    }
  }
}

TEST_P(BulkConversionTest, ZeroElementsTouchNothing) {
  const DType dtype = GetParam();
  float src = 1.0f;
  unsigned char dst[4] = {0xAB, 0xAB, 0xAB, 0xAB};
  FromFloat(dtype, &src, dst, 0);
  float back = 5.0f;
  ToFloat(dtype, dst, &back, 0);
  EXPECT_THAT(dst, ::testing::Each(0xAB));
  EXPECT_EQ(back, 5.0f);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, BulkConversionTest,
                         test::ComputeDTypes(), test::DTypeParamName);

// A FLOAT8 format as the tests see it: field widths and which codes are
// special, with the functions under test.
struct Fp8Format {
  const char* name;
  DType dtype;
  int exp_bits;
  int mant_bits;
  int bias;
  // E5M2: an all-ones exponent is inf (mantissa 0) or NaN, as in IEEE 754.
  // E4M3FN: only all-ones exponent and mantissa is NaN; no infinities.
  bool ieee_specials;
  uint8_t largest_finite;  // Positive code of the largest finite value.
  float (*decode)(uint8_t);
  uint8_t (*encode)(float);
};

const Fp8Format kE4M3FN{
    "E4M3FN",         DType::kFloat8E4M3FN, 4, 3, 7, false, 0x7E,
    Fp8E4M3FNToFloat, FloatToFp8E4M3FN};
const Fp8Format kE5M2{"E5M2",         DType::kFloat8E5M2, 5, 2, 15, true, 0x7B,
                      Fp8E5M2ToFloat, FloatToFp8E5M2};

void PrintTo(const Fp8Format& f, std::ostream* os) { *os << f.name; }

// The value of code `b` from its sign, exponent and mantissa fields.
double ModelFp8Value(const Fp8Format& f, uint8_t b) {
  const bool negative = (b & 0x80) != 0;
  const int e = (b >> f.mant_bits) & ((1 << f.exp_bits) - 1);
  const int m = b & ((1 << f.mant_bits) - 1);
  const int e_max = (1 << f.exp_bits) - 1;
  const int m_max = (1 << f.mant_bits) - 1;
  double mag;
  if (f.ieee_specials && e == e_max) {
    mag = m == 0 ? std::numeric_limits<double>::infinity()
                 : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.ieee_specials && e == e_max && m == m_max) {
    mag = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {  // Subnormal: m units of 2^(1 - bias - mant_bits).
    mag = std::ldexp(m, 1 - f.bias - f.mant_bits);
  } else {
    mag = std::ldexp(1.0 + std::ldexp(m, -f.mant_bits), e - f.bias);
  }
  return negative ? -mag : mag;
}

// The magnitudes an encoder rounds between: every positive finite code's
// value in code order (positive codes grow with their bit pattern), and for
// E5M2 one more entry, 2^16, standing for the infinity code that follows the
// largest finite one.
std::vector<double> ModelRoundingGrid(const Fp8Format& f) {
  std::vector<double> grid;
  for (int b = 0; b <= f.largest_finite; ++b) {
    grid.push_back(ModelFp8Value(f, static_cast<uint8_t>(b)));
  }
  if (f.ieee_specials) {
    grid.push_back(std::ldexp(1.0, (1 << f.exp_bits) - 1 - f.bias));
  }
  return grid;
}

// Model of the encoder for non-NaN x: the grid entry nearest to |x|, ties to
// the even code; E4M3FN clamps to its largest value first, E5M2 gives inf
// from 2^16 up.
uint8_t ModelFp8Encode(const std::vector<double>& grid, double x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::min(std::fabs(x), grid.back());
  if (a == grid.back()) return sign | static_cast<uint8_t>(grid.size() - 1);
  // grid[lo] <= a < grid[lo + 1].
  const size_t lo =
      std::upper_bound(grid.begin(), grid.end(), a) - grid.begin() - 1;
  const double below = a - grid[lo];
  const double above = grid[lo + 1] - a;
  size_t code = below < above ? lo : lo + 1;
  if (below == above) code = lo % 2 == 0 ? lo : lo + 1;
  return sign | static_cast<uint8_t>(code);
}

class Fp8FormatTest : public ::testing::TestWithParam<Fp8Format> {};

TEST_P(Fp8FormatTest, DecodesEveryCodeFromItsFields) {
  const Fp8Format& f = GetParam();
  for (int code = 0; code < 256; ++code) {
    const uint8_t b = static_cast<uint8_t>(code);
    const double want = ModelFp8Value(f, b);
    const float got = f.decode(b);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << code;
      EXPECT_NE(ToBits(got) & 0x00400000u, 0u) << "quiet NaN " << code;
      EXPECT_EQ(std::signbit(got), (b & 0x80) != 0) << std::hex << code;
      continue;
    }
    ASSERT_EQ(static_cast<double>(got), want) << std::hex << code;
    ASSERT_EQ(std::signbit(got), (b & 0x80) != 0) << std::hex << code;
  }
}

TEST_P(Fp8FormatTest, BulkToFloatMatchesScalarDecoding) {
  const Fp8Format& f = GetParam();
  std::vector<uint8_t> codes(256 + 3);  // Odd length: every vector tail.
  for (size_t i = 0; i < codes.size(); ++i) {
    codes[i] = static_cast<uint8_t>(i * 7 + 3);
  }
  std::vector<float> got(codes.size(), -1.0f);
  ToFloat(f.dtype, codes.data(), got.data(), codes.size());
  for (size_t i = 0; i < codes.size(); ++i) {
    ASSERT_EQ(ToBits(got[i]), ToBits(f.decode(codes[i]))) << i;
  }
}

TEST_P(Fp8FormatTest, EveryNonNanCodeRoundTrips) {
  const Fp8Format& f = GetParam();
  for (int code = 0; code < 256; ++code) {
    const uint8_t b = static_cast<uint8_t>(code);
    if (std::isnan(ModelFp8Value(f, b))) continue;
    ASSERT_EQ(f.encode(f.decode(b)), b) << std::hex << code;
  }
}

TEST_P(Fp8FormatTest, EncoderMatchesNearestEvenModel) {
  const Fp8Format& f = GetParam();
  const std::vector<double> grid = ModelRoundingGrid(f);
  // A stride through all finite fp32 bit patterns of both signs.
  for (uint64_t bits = 0; bits < 0x7F800000u; bits += 4099) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float x = FromBits(static_cast<uint32_t>(bits) | sign);
      ASSERT_EQ(f.encode(x), ModelFp8Encode(grid, x))
          << "float bits " << std::hex << (bits | sign);
    }
  }
  // Every tie between neighbouring codes, and the floats either side of it.
  // (For E5M2 the last one is 61440, between 57344 and inf.)
  for (int lo = 0; lo + 1 < static_cast<int>(grid.size()); ++lo) {
    const float tie = static_cast<float>((grid[lo] + grid[lo + 1]) / 2);
    ASSERT_EQ(static_cast<double>(tie), (grid[lo] + grid[lo + 1]) / 2);
    const uint8_t even = static_cast<uint8_t>(lo % 2 == 0 ? lo : lo + 1);
    for (uint8_t sign : {uint8_t{0}, uint8_t{0x80}}) {
      const float s = sign ? -1.0f : 1.0f;
      ASSERT_EQ(f.encode(s * tie), sign | even) << "tie above " << lo;
      ASSERT_EQ(f.encode(s * std::nextafter(tie, 0.0f)), sign | lo)
          << "just below the tie above " << lo;
      ASSERT_EQ(f.encode(s * std::nextafter(tie, 1e30f)), sign | (lo + 1))
          << "just above the tie above " << lo;
    }
  }
}

TEST_P(Fp8FormatTest, BulkFromFloatMatchesScalarEncoding) {
  const Fp8Format& f = GetParam();
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> src(1003);
  for (float& x : src) {
    x = dist(gen) * std::ldexp(1.0f, static_cast<int>(gen() % 40) - 22);
  }
  src[0] = std::numeric_limits<float>::quiet_NaN();
  src[1] = -std::numeric_limits<float>::infinity();
  src[2] = 1e6f;
  src[1002] = -0.0f;
  std::vector<uint8_t> dst(src.size() + 1, 0xAB);
  FromFloat(f.dtype, src.data(), dst.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(dst[i], f.encode(src[i])) << "element " << i << " = " << src[i];
  }
  EXPECT_EQ(dst.back(), 0xAB);
  // And nothing at all for zero elements.
  FromFloat(f.dtype, src.data(), dst.data() + src.size(), 0);
  float untouched = 5.0f;
  ToFloat(f.dtype, dst.data(), &untouched, 0);
  EXPECT_EQ(dst.back(), 0xAB);
  EXPECT_EQ(untouched, 5.0f);
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8FormatTest,
                         ::testing::Values(kE4M3FN, kE5M2),
                         [](const ::testing::TestParamInfo<Fp8Format>& info) {
                           return std::string(info.param.name);
                         });

TEST(Fp8E4M3FNTest, DecodesKnownCodes) {
  EXPECT_EQ(Fp8E4M3FNToFloat(0x38), 1.0f);    // Exponent 7 = bias.
  EXPECT_EQ(Fp8E4M3FNToFloat(0x7E), 448.0f);  // Largest.
  EXPECT_EQ(Fp8E4M3FNToFloat(0xFE), -448.0f);
  EXPECT_EQ(Fp8E4M3FNToFloat(0x77), 240.0f);       // 1.875 * 2^7.
  EXPECT_EQ(Fp8E4M3FNToFloat(0x08), 0x1p-6f);      // Smallest normal.
  EXPECT_EQ(Fp8E4M3FNToFloat(0x07), 7 * 0x1p-9f);  // Largest subnormal.
  EXPECT_EQ(Fp8E4M3FNToFloat(0x01), 0x1p-9f);      // Smallest subnormal.
  EXPECT_EQ(ToBits(Fp8E4M3FNToFloat(0x80)), 0x80000000u);
  EXPECT_TRUE(std::isnan(Fp8E4M3FNToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Fp8E4M3FNToFloat(0xFF)));
  int nans = 0;
  for (int b = 0; b < 256; ++b) {
    const float v = Fp8E4M3FNToFloat(static_cast<uint8_t>(b));
    nans += std::isnan(v);
    EXPECT_FALSE(std::isinf(v)) << b;
  }
  EXPECT_EQ(nans, 2);
}

TEST(Fp8E4M3FNTest, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(FloatToFp8E4M3FN(1.0f + 0x1p-4f), 0x38);      // Tie, even below.
  EXPECT_EQ(FloatToFp8E4M3FN(1.0f + 3 * 0x1p-4f), 0x3A);  // Tie, even above.
  EXPECT_EQ(FloatToFp8E4M3FN(1.0f + 0x1.2p-4f), 0x39);
  EXPECT_EQ(FloatToFp8E4M3FN(2.0f - 0x1p-4f), 0x40);  // Carry: 2.0.
  EXPECT_EQ(FloatToFp8E4M3FN(0x1p-10f), 0x00);        // Subnormal tie.
  EXPECT_EQ(FloatToFp8E4M3FN(3 * 0x1p-10f), 0x02);
  EXPECT_EQ(FloatToFp8E4M3FN(-3 * 0x1p-10f), 0x82);
  EXPECT_EQ(FloatToFp8E4M3FN(15 * 0x1p-10f), 0x08);  // Up to the normals.
  EXPECT_EQ(FloatToFp8E4M3FN(-0x1p-12f), 0x80);      // Keeps the sign.
  EXPECT_EQ(FloatToFp8E4M3FN(FromBits(0x00000001)), 0x00);
  for (float big : {448.0f, 449.0f, 464.0f, 480.0f, 1e6f, FLT_MAX,
                    std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(FloatToFp8E4M3FN(big), 0x7E) << big;
    EXPECT_EQ(FloatToFp8E4M3FN(-big), 0xFE) << -big;
  }
  EXPECT_EQ(FloatToFp8E4M3FN(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(FloatToFp8E4M3FN(-std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(FloatToFp8E4M3FN(FromBits(0x7F800001)), 0x7F);
}

TEST(Fp8E5M2Test, DecodesKnownCodes) {
  EXPECT_EQ(Fp8E5M2ToFloat(0x3C), 1.0f);          // Exponent 15 = bias.
  EXPECT_EQ(Fp8E5M2ToFloat(0x7B), 57344.0f);      // Largest finite.
  EXPECT_EQ(Fp8E5M2ToFloat(0x04), 0x1p-14f);      // Smallest normal.
  EXPECT_EQ(Fp8E5M2ToFloat(0x03), 3 * 0x1p-16f);  // Largest subnormal.
  EXPECT_EQ(Fp8E5M2ToFloat(0x01), 0x1p-16f);
  EXPECT_EQ(Fp8E5M2ToFloat(0x81), -0x1p-16f);
  EXPECT_EQ(Fp8E5M2ToFloat(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fp8E5M2ToFloat(0xFC), -std::numeric_limits<float>::infinity());
  int nans = 0;
  for (int b = 0; b < 256; ++b) {
    nans += std::isnan(Fp8E5M2ToFloat(static_cast<uint8_t>(b)));
  }
  EXPECT_EQ(nans, 6);  // S.11111.{01,10,11}.
}

TEST(Fp8E5M2Test, RoundsToNearestEvenAndOverflowsToInfinity) {
  EXPECT_EQ(FloatToFp8E5M2(1.0f + 0x1p-3f), 0x3C);      // Tie, even below.
  EXPECT_EQ(FloatToFp8E5M2(1.0f + 3 * 0x1p-3f), 0x3E);  // Tie, even above.
  EXPECT_EQ(FloatToFp8E5M2(0x1p-17f), 0x00);            // Subnormal tie.
  EXPECT_EQ(FloatToFp8E5M2(3 * 0x1p-17f), 0x02);
  EXPECT_EQ(FloatToFp8E5M2(7 * 0x1p-17f), 0x04);  // Up to the normals.
  EXPECT_EQ(FloatToFp8E5M2(-0x1p-18f), 0x80);
  EXPECT_EQ(FloatToFp8E5M2(57344.0f), 0x7B);
  EXPECT_EQ(FloatToFp8E5M2(std::nextafter(61440.0f, 0.0f)), 0x7B);
  EXPECT_EQ(FloatToFp8E5M2(61440.0f), 0x7C);  // Tie: the even code is inf.
  EXPECT_EQ(FloatToFp8E5M2(-61440.0f), 0xFC);
  EXPECT_EQ(FloatToFp8E5M2(FLT_MAX), 0x7C);
  EXPECT_EQ(FloatToFp8E5M2(std::numeric_limits<float>::infinity()), 0x7C);
  EXPECT_EQ(FloatToFp8E5M2(-std::numeric_limits<float>::infinity()), 0xFC);
  EXPECT_EQ(FloatToFp8E5M2(std::numeric_limits<float>::quiet_NaN()), 0x7E);
  EXPECT_EQ(FloatToFp8E5M2(-std::numeric_limits<float>::quiet_NaN()), 0x7E);
  EXPECT_EQ(FloatToFp8E5M2(FromBits(0x7F800001)), 0x7E);
}

TEST(DTypeTest, ItemSizesNamesAndComputeTypes) {
  EXPECT_EQ(ItemSize(DType::kFloat32), 4u);
  EXPECT_EQ(ItemSize(DType::kFloat16), 2u);
  EXPECT_EQ(ItemSize(DType::kBFloat16), 2u);
  EXPECT_EQ(ItemSize(DType::kFloat8E4M3FN), 1u);
  EXPECT_EQ(ItemSize(DType::kFloat8E5M2), 1u);
  EXPECT_EQ(ItemSize(DType::kUInt8), 1u);
  EXPECT_EQ(ItemSize(DType::kBool), 1u);
  EXPECT_EQ(ItemSize(DType::kInt32), 4u);
  EXPECT_EQ(ItemSize(DType::kInt64), 8u);
  EXPECT_STREQ(DTypeName(DType::kBFloat16), "BFLOAT16");
  EXPECT_STREQ(DTypeName(DType::kFloat8E4M3FN), "FLOAT8_E4M3FN");
  EXPECT_STREQ(DTypeName(DType::kBool), "BOOL");
  EXPECT_TRUE(IsFloatingCompute(DType::kFloat16));
  EXPECT_TRUE(IsFloatingCompute(DType::kBFloat16));
  EXPECT_TRUE(IsFloatingCompute(DType::kFloat32));
  EXPECT_FALSE(IsFloatingCompute(DType::kFloat8E5M2));
  EXPECT_FALSE(IsFloatingCompute(DType::kUInt8));
  EXPECT_FALSE(IsFloatingCompute(DType::kInt64));
}

}  // namespace
}  // namespace attnserve::core
