#include "tests/testing/float8.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

namespace attnserve::test {
namespace {

struct Format {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool ieee_specials;  // E5M2: exponent all ones is inf/NaN.
};

Format FormatOf(core::DType dtype) {
  if (dtype == core::DType::kFloat8E4M3FN) return Format{4, 3, 7, false};
  if (dtype == core::DType::kFloat8E5M2) return Format{5, 2, 15, true};
  std::fprintf(stderr, "float8: not a FLOAT8 dtype\n");
  std::abort();
}

// Largest finite magnitude code (sign bit clear).
uint8_t MaxFiniteCode(core::DType dtype) {
  return dtype == core::DType::kFloat8E4M3FN ? 0x7E : 0x7B;
}

}  // namespace

bool IsFloat8(core::DType dtype) {
  return dtype == core::DType::kFloat8E4M3FN ||
         dtype == core::DType::kFloat8E5M2;
}

double DecodeFloat8(core::DType dtype, uint8_t byte) {
  const Format f = FormatOf(dtype);
  const double sign = (byte & 0x80) != 0 ? -1.0 : 1.0;
  const int exp_mask = (1 << f.exponent_bits) - 1;
  const int man_mask = (1 << f.mantissa_bits) - 1;
  const int e = (byte >> f.mantissa_bits) & exp_mask;
  const int m = byte & man_mask;
  const double steps = static_cast<double>(1 << f.mantissa_bits);
  if (f.ieee_specials && e == exp_mask) {
    return m == 0 ? sign * std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  }
  if (!f.ieee_specials && e == exp_mask && m == man_mask) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (e == 0) return sign * std::ldexp(m / steps, 1 - f.bias);
  return sign * std::ldexp(1.0 + m / steps, e - f.bias);
}

uint8_t EncodeFloat8(core::DType dtype, double value) {
  const uint8_t max_code = MaxFiniteCode(dtype);
  const double magnitude = std::fabs(value);
  const double max_value = DecodeFloat8(dtype, max_code);
  const double half_step =
      (max_value - DecodeFloat8(dtype, static_cast<uint8_t>(max_code - 1))) / 2;
  if (!(magnitude < max_value + half_step)) {
    std::fprintf(stderr, "float8: %g is outside the finite range\n", value);
    std::abort();
  }
  // Codes 0..max_code are the non-negative finite values in increasing
  // order: take the nearest, the even one on a tie.
  uint8_t best = 0;
  double best_err = magnitude;
  for (int c = 1; c <= max_code; ++c) {
    const double err =
        std::fabs(DecodeFloat8(dtype, static_cast<uint8_t>(c)) - magnitude);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = static_cast<uint8_t>(c);
      best_err = err;
    }
  }
  return std::signbit(value) ? static_cast<uint8_t>(best | 0x80) : best;
}

std::vector<double> RoundToFloat8(const std::vector<double>& values,
                                  core::DType dtype) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = DecodeFloat8(dtype, EncodeFloat8(dtype, values[i]));
  }
  return out;
}

core::HostTensor PackFloat8(const std::vector<double>& values,
                            std::vector<int64_t> shape, core::DType dtype) {
  core::HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    t.bytes[i] = static_cast<char>(EncodeFloat8(dtype, values[i]));
  }
  return t;
}

}  // namespace attnserve::test
