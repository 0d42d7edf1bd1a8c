// FLOAT8 values on the test side: exact decoding of FLOAT8_E4M3FN and
// FLOAT8_E5M2 bytes and round-to-nearest-even encoding, written from the
// format definitions independently of the core.
//
//   uint8_t byte = EncodeFloat8(DType::kFloat8E4M3FN, 0.3);  // 0x2A
//   double back = DecodeFloat8(DType::kFloat8E4M3FN, byte);   // 0.3125
//
// E4M3FN: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities,
// S.1111.111 is NaN, largest finite 448, subnormals m/8 * 2^-6.
// E5M2: 1 sign, 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like
// (exponent 31: infinity or NaN), largest finite 57344, subnormals
// m/4 * 2^-14. Pure and thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_FLOAT8_H_
#define ATTNSERVE_TESTS_TESTING_FLOAT8_H_

#include <cstdint>
#include <vector>

#include "attnserve/core/dtype.h"
#include "attnserve/core/tensor.h"

namespace attnserve::test {

// True for FLOAT8_E4M3FN and FLOAT8_E5M2.
bool IsFloat8(core::DType dtype);

// The value of `byte` (NaN and infinities included).
double DecodeFloat8(core::DType dtype, uint8_t byte);

// The finite code nearest to `value`, ties to the even code. Aborts when
// |value| is beyond the largest finite value plus half a step (a test bug).
uint8_t EncodeFloat8(core::DType dtype, double value);

// Each value replaced by the value of its nearest code.
std::vector<double> RoundToFloat8(const std::vector<double>& values,
                                  core::DType dtype);

// A row-major FLOAT8 tensor of `shape` holding `values` (already rounded).
core::HostTensor PackFloat8(const std::vector<double>& values,
                            std::vector<int64_t> shape, core::DType dtype);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_FLOAT8_H_
