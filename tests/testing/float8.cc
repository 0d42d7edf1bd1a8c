#include "tests/testing/float8.h"

#include <algorithm>
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

// Values of codes 0 .. largest finite (sign bit clear).
std::vector<double> FiniteValues(core::DType dtype);

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
  // The non-negative finite values, in code order (increasing), once.
  static const std::vector<double>* const kE4M3 =
      new std::vector<double>(FiniteValues(core::DType::kFloat8E4M3FN));
  static const std::vector<double>* const kE5M2 =
      new std::vector<double>(FiniteValues(core::DType::kFloat8E5M2));
  const std::vector<double>& values =
      dtype == core::DType::kFloat8E4M3FN ? *kE4M3 : *kE5M2;
  const size_t max_code = values.size() - 1;
  (void)FormatOf(dtype);  // Aborts on a dtype other than FLOAT8.
  const double magnitude = std::fabs(value);
  const double half_step = (values[max_code] - values[max_code - 1]) / 2;
  if (!(magnitude < values[max_code] + half_step)) {
    std::fprintf(stderr, "float8: %g is outside the finite range\n", value);
    std::abort();
  }
  // The nearest of the two neighbours, the even code on a tie.
  const size_t above = static_cast<size_t>(
      std::lower_bound(values.begin(), values.end(), magnitude) -
      values.begin());
  size_t best = std::min(above, max_code);
  if (above > 0) {
    const size_t below = above - 1;
    const double err_below = magnitude - values[below];
    const double err_above =
        above <= max_code ? values[above] - magnitude : err_below + 1;
    if (err_below < err_above || (err_below == err_above && (below & 1) == 0)) {
      best = below;
    }
  }
  const uint8_t code = static_cast<uint8_t>(best);
  return std::signbit(value) ? static_cast<uint8_t>(code | 0x80) : code;
}

namespace {

std::vector<double> FiniteValues(core::DType dtype) {
  std::vector<double> v;
  for (int c = 0; c <= MaxFiniteCode(dtype); ++c) {
    v.push_back(DecodeFloat8(dtype, static_cast<uint8_t>(c)));
  }
  return v;
}

}  // namespace

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
