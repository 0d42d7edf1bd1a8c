// The core's element conversions (attnserve/core/dtype.h) against a plain
// reference written here from the formats' definitions, in float64: every
// code decoded as sign * 2^e * 1.m (or the subnormal 0.m), and narrowing as
// the nearest representable value, ties to the even code.
//
// Input: any bytes. Read as float32 values they are narrowed to FLOAT16,
// BFLOAT16, FLOAT8_E4M3FN and FLOAT8_E5M2 (scalar and bulk, FromFloat);
// read as 16-bit and 8-bit codes they are widened (scalar and bulk,
// ToFloat). Results must equal the reference bit for bit (NaN: a NaN with
// the documented code or sign).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/dtype.h"
#include "fuzz/fuzz_check.h"

namespace attnserve::fuzz {
namespace {

using core::DType;

// A binary floating-point format: `exponent_bits`, `mantissa_bits`, and
// whether the top exponent holds infinities and NaNs (IEEE) or, as in
// FLOAT8_E4M3FN, only S.1111.111 is NaN and the rest of the top exponent
// are numbers.
struct Format {
  const char* name;
  DType dtype;
  int exponent_bits;
  int mantissa_bits;
  bool ieee;

  int bits() const { return 1 + exponent_bits + mantissa_bits; }
  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  uint32_t sign_bit() const { return uint32_t{1} << (bits() - 1); }
  uint32_t max_exponent() const { return (1u << exponent_bits) - 1; }
  uint32_t mantissa_mask() const { return (1u << mantissa_bits) - 1; }

  bool IsNan(uint32_t code) const {
    const uint32_t e = (code >> mantissa_bits) & max_exponent();
    const uint32_t m = code & mantissa_mask();
    if (ieee) return e == max_exponent() && m != 0;
    return e == max_exponent() && m == mantissa_mask();
  }
  bool IsInf(uint32_t code) const {
    const uint32_t e = (code >> mantissa_bits) & max_exponent();
    return ieee && e == max_exponent() && (code & mantissa_mask()) == 0;
  }
  // The value of a code that is not NaN.
  double Decode(uint32_t code) const {
    const bool negative = (code & sign_bit()) != 0;
    const uint32_t e = (code >> mantissa_bits) & max_exponent();
    const uint32_t m = code & mantissa_mask();
    double magnitude;
    if (IsInf(code)) {
      magnitude = HUGE_VAL;
    } else if (e == 0) {
      magnitude =
          std::ldexp(static_cast<double>(m), 1 - bias() - mantissa_bits);
    } else {
      magnitude =
          std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -mantissa_bits),
                     static_cast<int>(e) - bias());
    }
    return negative ? -magnitude : magnitude;
  }
  // The largest finite positive code.
  uint32_t MaxFiniteCode() const {
    return ieee ? (max_exponent() << mantissa_bits) - 1
                : (max_exponent() << mantissa_bits) + mantissa_mask() - 1;
  }
};

constexpr Format kHalf{"FLOAT16", DType::kFloat16, 5, 10, true};
constexpr Format kBf16{"BFLOAT16", DType::kBFloat16, 8, 7, true};
constexpr Format kE4M3{"FLOAT8_E4M3FN", DType::kFloat8E4M3FN, 4, 3, false};
constexpr Format kE5M2{"FLOAT8_E5M2", DType::kFloat8E5M2, 5, 2, true};

// The positive finite values of `f`, by code (ascending with the code).
const std::vector<double>& PositiveValues(const Format& f) {
  static std::vector<double> tables[4];
  std::vector<double>& t = tables[f.dtype == DType::kFloat16        ? 0
                                  : f.dtype == DType::kBFloat16     ? 1
                                  : f.dtype == DType::kFloat8E4M3FN ? 2
                                                                    : 3];
  if (t.empty()) {
    for (uint32_t c = 0; c <= f.MaxFiniteCode(); ++c) t.push_back(f.Decode(c));
  }
  return t;
}

// Narrowing reference: the code of `x` in `f`, round to nearest, ties to
// even; beyond the largest finite value IEEE formats round to infinity as
// if it were the next code, E4M3FN saturates. NaN is handled by the caller.
uint32_t Narrow(const Format& f, float x) {
  const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0;
  const double a = std::fabs(static_cast<double>(x));
  const std::vector<double>& values = PositiveValues(f);
  const uint32_t max_code = f.MaxFiniteCode();
  const double max = values.back();
  if (!f.ieee) {
    if (a >= max) return sign | max_code;
  } else {
    // Infinity stands where the next code's value would be.
    const double next = max + (max - values[values.size() - 2]);
    if (a >= next) return sign | (max_code + 1);
    if (a > max) {
      const double half = (max + next) / 2;
      if (a < half) return sign | max_code;
      // A tie goes to the even code: the infinity's, max_code being odd.
      return sign |
             (a == half && (max_code & 1) == 0 ? max_code : max_code + 1);
    }
  }
  const auto it = std::lower_bound(values.begin(), values.end(), a);
  const uint32_t hi = static_cast<uint32_t>(it - values.begin());
  if (values[hi] == a || hi == 0) return sign | hi;
  const uint32_t lo = hi - 1;
  const double below = a - values[lo];
  const double above = values[hi] - a;
  if (below < above) return sign | lo;
  if (above < below) return sign | hi;
  return sign | ((lo & 1) == 0 ? lo : hi);
}

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// `got` (a widened code) equals the reference decoding of `code`.
void CheckWidened(const Format& f, uint32_t code, float got) {
  if (f.IsNan(code)) {
    FUZZ_CHECK(std::isnan(got), f.name, " code 0x", absl::Hex(code),
               " widened to ", got, ", not NaN");
    FUZZ_CHECK(std::signbit(got) == ((code & f.sign_bit()) != 0), f.name,
               " code 0x", absl::Hex(code), ": NaN of the other sign");
    return;
  }
  const double want = f.Decode(code);
  FUZZ_CHECK(static_cast<double>(got) == want &&
                 std::signbit(got) == std::signbit(want),
             f.name, " code 0x", absl::Hex(code), " widened to ", got,
             ", want ", want);
}

// `got` (the narrowed `x`) equals the reference.
void CheckNarrowed(const Format& f, float x, uint32_t got) {
  if (std::isnan(x)) {
    if (f.dtype == DType::kFloat8E4M3FN) {
      FUZZ_CHECK(got == 0x7F, f.name, " NaN narrowed to 0x", absl::Hex(got));
    } else if (f.dtype == DType::kFloat8E5M2) {
      FUZZ_CHECK(got == 0x7E, f.name, " NaN narrowed to 0x", absl::Hex(got));
    } else {
      FUZZ_CHECK(f.IsNan(got), f.name, " NaN narrowed to 0x", absl::Hex(got));
      if (f.dtype == DType::kBFloat16) {
        FUZZ_CHECK(((got & f.sign_bit()) != 0) == std::signbit(x), f.name,
                   " NaN lost its sign");
      }
    }
    return;
  }
  const uint32_t want = Narrow(f, x);
  FUZZ_CHECK(got == want, f.name, ": ", x, " (0x", absl::Hex(FloatBits(x)),
             ") narrowed to 0x", absl::Hex(got), ", want 0x", absl::Hex(want));
}

uint32_t NarrowScalar(const Format& f, float x) {
  switch (f.dtype) {
    case DType::kFloat16:
      return core::FloatToHalf(x);
    case DType::kBFloat16:
      return core::FloatToBf16(x);
    case DType::kFloat8E4M3FN:
      return core::FloatToFp8E4M3FN(x);
    default:
      return core::FloatToFp8E5M2(x);
  }
}

float WidenScalar(const Format& f, uint32_t code) {
  switch (f.dtype) {
    case DType::kFloat16:
      return core::HalfToFloat(static_cast<uint16_t>(code));
    case DType::kBFloat16:
      return core::Bf16ToFloat(static_cast<uint16_t>(code));
    case DType::kFloat8E4M3FN:
      return core::Fp8E4M3FNToFloat(static_cast<uint8_t>(code));
    default:
      return core::Fp8E5M2ToFloat(static_cast<uint8_t>(code));
  }
}

uint32_t LoadCode(const Format& f, const uint8_t* p) {
  if (f.bits() == 8) return p[0];
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = attnserve::fuzz;
  using attnserve::core::DType;
  const fz::Format* const formats[] = {&fz::kHalf, &fz::kBf16, &fz::kE4M3,
                                       &fz::kE5M2};

  // Narrowing: the input as float32 values.
  const size_t n = size / 4;
  std::vector<float> values(n);
  if (n > 0) std::memcpy(values.data(), data, n * 4);
  for (const fz::Format* f : formats) {
    const size_t item = static_cast<size_t>(f->bits() / 8);
    std::vector<uint8_t> bulk(n * item + 1, 0xA5);
    attnserve::core::FromFloat(f->dtype, values.data(), bulk.data(), n);
    FUZZ_CHECK(bulk[n * item] == 0xA5, f->name, ": FromFloat wrote past ", n,
               " elements");
    for (size_t i = 0; i < n; ++i) {
      const uint32_t scalar = fz::NarrowScalar(*f, values[i]);
      fz::CheckNarrowed(*f, values[i], scalar);
      FUZZ_CHECK(fz::LoadCode(*f, &bulk[i * item]) == scalar, f->name,
                 ": FromFloat differs from the scalar narrowing at ", i);
    }
  }
  // FLOAT32 copies; the integer dtypes write nothing.
  std::vector<float> copied(n + 1, 7.0f);
  attnserve::core::FromFloat(DType::kFloat32, values.data(), copied.data(), n);
  FUZZ_CHECK(n == 0 || std::memcmp(copied.data(), values.data(), n * 4) == 0,
             "FromFloat FLOAT32 is not a copy");
  for (DType other :
       {DType::kUInt8, DType::kBool, DType::kInt32, DType::kInt64}) {
    std::vector<uint8_t> untouched(n * 8 + 1, 0x5A);
    attnserve::core::FromFloat(other, values.data(), untouched.data(), n);
    FUZZ_CHECK(std::all_of(untouched.begin(), untouched.end(),
                           [](uint8_t b) { return b == 0x5A; }),
               attnserve::core::DTypeName(other), ": FromFloat wrote");
  }

  // Widening: the input as codes of each format.
  for (const fz::Format* f : formats) {
    const size_t item = static_cast<size_t>(f->bits() / 8);
    const size_t count = size / item;
    std::vector<float> bulk(count + 1, 3.0f);
    attnserve::core::ToFloat(f->dtype, data, bulk.data(), count);
    FUZZ_CHECK(bulk[count] == 3.0f, f->name, ": ToFloat wrote past ", count,
               " elements");
    for (size_t i = 0; i < count; ++i) {
      const uint32_t code = fz::LoadCode(*f, data + i * item);
      const float scalar = fz::WidenScalar(*f, code);
      fz::CheckWidened(*f, code, scalar);
      FUZZ_CHECK(std::memcmp(&bulk[i], &scalar, 4) == 0, f->name,
                 ": ToFloat differs from the scalar widening at ", i);
    }
  }
  return 0;
}
