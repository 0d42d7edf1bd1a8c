#include "attnserve/core/dtype.h"

#include <array>
#include <cmath>
#include <cstring>

namespace attnserve::core {
namespace {

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace

size_t ItemSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat8E4M3FN:
    case DType::kFloat8E5M2:
    case DType::kUInt8:
    case DType::kBool:
      return 1;
    case DType::kInt64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "FLOAT32";
    case DType::kFloat16:
      return "FLOAT16";
    case DType::kBFloat16:
      return "BFLOAT16";
    case DType::kFloat8E4M3FN:
      return "FLOAT8_E4M3FN";
    case DType::kFloat8E5M2:
      return "FLOAT8_E5M2";
    case DType::kUInt8:
      return "UINT8";
    case DType::kBool:
      return "BOOL";
    case DType::kInt32:
      return "INT32";
    case DType::kInt64:
      return "INT64";
  }
  return "UNKNOWN";
}

bool IsFloatingCompute(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

// Round-to-nearest-even narrowing. Normal results round by adding half an
// ulp minus one plus the lowest kept bit (ties go to even); results below the
// half-precision normal range are rounded by the FPU itself by adding a magic
// number whose ulp equals the smallest half subnormal.
uint16_t FloatToHalf(float f) {
  uint32_t x = Bits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t out;
  if (x >= 0x47800000u) {  // |f| >= 65536, inf or NaN.
    out = x > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (x < 0x38800000u) {  // |f| < 2^-14: half subnormal or zero.
    const float magic = FromBits(0x3f000000u);  // 0.5: ulp 2^-24.
    out = static_cast<uint16_t>(Bits(FromBits(x) + magic) - 0x3f000000u);
  } else {
    const uint32_t odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd;  // Rebias exponent (-112 << 23) and round.
    out = static_cast<uint16_t>(x >> 13);
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float mag = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -mag : mag;
  }
  if (exp == 31) return FromBits(sign | 0x7f800000u | (mant << 13));
  return FromBits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToBf16(float f) {
  const uint32_t x = Bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign, force quiet.
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float Bf16ToFloat(uint16_t b) {
  return FromBits(static_cast<uint32_t>(b) << 16);
}

float Fp8E4M3FNToFloat(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xf && mant == 0x7) return FromBits(sign | 0x7fc00000u);
  if (exp == 0) {
    const float mag = std::ldexp(static_cast<float>(mant), -9);
    return sign ? -mag : mag;
  }
  // Rebias 7 -> 127.
  return FromBits(sign | ((exp + 120) << 23) | (mant << 20));
}

float Fp8E5M2ToFloat(uint8_t b) {
  if ((b & 0x7fu) > 0x7cu) {  // NaN: quiet, whatever the payload.
    return FromBits((static_cast<uint32_t>(b & 0x80u) << 24) | 0x7fc00000u);
  }
  return HalfToFloat(static_cast<uint16_t>(b << 8));  // Exact.
}

// Normal results round like FloatToHalf (add half an ulp minus one plus the
// lowest kept bit, then rebias); results below the normal range are rounded
// by the FPU, adding a magic number whose ulp is the format's smallest
// subnormal.
uint8_t FloatToFp8E4M3FN(float f) {
  uint32_t x = Bits(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7f;             // NaN.
  if (x > 0x43e00000u) return sign | 0x7e;      // Beyond 448: saturate.
  if (x < 0x3c800000u) {                        // Below 2^-6.
    const float magic = FromBits(0x46800000u);  // 2^14: ulp 2^-9.
    return sign | static_cast<uint8_t>(Bits(FromBits(x) + magic) - 0x46800000u);
  }
  x += 0x7ffffu + ((x >> 20) & 1u);
  return sign | static_cast<uint8_t>((x >> 20) - (120u << 3));
}

uint8_t FloatToFp8E5M2(float f) {
  uint32_t x = Bits(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7e;             // NaN.
  if (x >= 0x47800000u) return sign | 0x7c;     // >= 2^16 or inf.
  if (x < 0x38800000u) {                        // Below 2^-14.
    const float magic = FromBits(0x43000000u);  // 2^7: ulp 2^-16.
    return sign | static_cast<uint8_t>(Bits(FromBits(x) + magic) - 0x43000000u);
  }
  // A carry out of 57344's mantissa lands on the infinity code.
  x += 0xfffffu + ((x >> 21) & 1u);
  return sign | static_cast<uint8_t>((x >> 21) - (112u << 2));
}

namespace {

// Every code's value, built on first use (thread-safe static init).
using Fp8Table = std::array<float, 256>;

template <float (*kDecode)(uint8_t)>
const Fp8Table& DecodeTable() {
  static const Fp8Table table = [] {
    Fp8Table t;
    for (int b = 0; b < 256; ++b) t[b] = kDecode(static_cast<uint8_t>(b));
    return t;
  }();
  return table;
}

void DecodeFp8(const Fp8Table& table, const void* src, float* dst, size_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = table[s[i]];
}

}  // namespace

// A 16-bit element at any address (the bytes a tensor was received in need
// not be aligned); compiles to a plain load.
inline uint16_t Load16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((target_clones("avx2", "default"))) void ToFloat(DType src_dtype,
                                                               const void* src,
                                                               float* dst,
                                                               size_t n) {
  if (n == 0) return;  // src/dst may be null for empty rows.
  switch (src_dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kFloat16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = HalfToFloat(Load16(s + 2 * i));
      return;
    }
    case DType::kBFloat16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) {
        dst[i] = FromBits(static_cast<uint32_t>(Load16(s + 2 * i)) << 16);
      }
      return;
    }
    case DType::kFloat8E4M3FN:
      DecodeFp8(DecodeTable<Fp8E4M3FNToFloat>(), src, dst, n);
      return;
    case DType::kFloat8E5M2:
      DecodeFp8(DecodeTable<Fp8E5M2ToFloat>(), src, dst, n);
      return;
    default:
      return;
  }
}

__attribute__((target_clones("avx2", "default"))) void FromFloat(
    DType dst_dtype, const float* src, void* dst, size_t n) {
  if (n == 0) return;  // src/dst may be null for empty rows.
  switch (dst_dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kFloat16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = FloatToHalf(src[i]);
      return;
    }
    case DType::kBFloat16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
      return;
    }
    case DType::kFloat8E4M3FN: {
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = FloatToFp8E4M3FN(src[i]);
      return;
    }
    case DType::kFloat8E5M2: {
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = FloatToFp8E5M2(src[i]);
      return;
    }
    default:
      return;
  }
}

}  // namespace attnserve::core
