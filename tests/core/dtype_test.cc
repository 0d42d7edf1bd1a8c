// FLOAT16 / BFLOAT16 conversions against hand-computed bit patterns and an
// independent round-to-nearest-even model in double.
#include "attnserve/core/dtype.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
                         ::testing::Values(DType::kFloat32, DType::kFloat16,
                                           DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

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
