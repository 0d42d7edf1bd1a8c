// Element types of tensors and their conversion to and from fp32.
//
// Every kernel computes in fp32; FLOAT16 and BFLOAT16 are widened on load and
// narrowed on store with round-to-nearest-even. The two FLOAT8 formats (grad
// inputs only) are widened exactly. Example:
//
//   uint16_t h = FloatToBf16(1.0f / 3.0f);
//   float f = Bf16ToFloat(h);            // 0.333984375
//   float g = Fp8E4M3FNToFloat(0x7E);    // 448, E4M3FN's largest value
#ifndef ATTNSERVE_CORE_DTYPE_H_
#define ATTNSERVE_CORE_DTYPE_H_

#include <cstddef>
#include <cstdint>

namespace attnserve::core {

// Mirrors attnserve.v1.DataType (same order, minus UNSPECIFIED).
enum class DType {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat8E4M3FN,
  kFloat8E5M2,
  kUInt8,
  kBool,
  kInt32,
  kInt64,
};

// Bytes per element.
size_t ItemSize(DType dtype);
// Upper-case name as in the wire contract without prefix, e.g. "BFLOAT16".
const char* DTypeName(DType dtype);
// True for FLOAT32, FLOAT16 and BFLOAT16 (the attention compute dtypes).
bool IsFloatingCompute(DType dtype);

// Scalar conversions, round-to-nearest-even; NaN stays NaN, overflow gives inf.
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t b);

// FLOAT8 formats, bit layout sign | exponent | mantissa:
//   FLOAT8_E4M3FN: 4 exponent bits (bias 7), 3 mantissa bits, subnormals
//     (m * 2^-9), no infinities; S.1111.111 (0x7F, 0xFF) is NaN, so the
//     largest magnitude is S.1111.110 = 448.
//   FLOAT8_E5M2: 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like:
//     subnormals (m * 2^-16), S.11111.00 = +-inf, S.11111.xx (xx != 0) = NaN,
//     largest finite 57344. (Its codes are the top bytes of FLOAT16 codes.)
// Widening is exact; NaN codes give a quiet NaN of the same sign.
float Fp8E4M3FNToFloat(uint8_t b);
float Fp8E5M2ToFloat(uint8_t b);
// Narrowing, round-to-nearest-even. E4M3FN saturates: magnitudes above 448,
// infinities included, give +-448 (0x7E / 0xFE); NaN gives 0x7F.
uint8_t FloatToFp8E4M3FN(float f);
// E5M2 overflows like IEEE: magnitudes from 61440 (half-way between 57344
// and 2^16) up give +-inf (0x7C / 0xFC); NaN gives the quiet NaN 0x7E (the
// top byte of FLOAT16's 0x7E00), whatever its sign.
uint8_t FloatToFp8E5M2(float f);

// Converts `n` elements of `src` (FLOAT32, FLOAT16, BFLOAT16, FLOAT8_E4M3FN
// or FLOAT8_E5M2) to fp32; other dtypes write nothing. `src` need not be
// aligned. Thread-safe (the FLOAT8 decoding tables are built once, on first
// use).
void ToFloat(DType src_dtype, const void* src, float* dst, size_t n);
// Converts `n` fp32 values to `dst_dtype` (the same five dtypes) with the
// scalar narrowing functions above; other dtypes write nothing.
void FromFloat(DType dst_dtype, const float* src, void* dst, size_t n);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_DTYPE_H_
