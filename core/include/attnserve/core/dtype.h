// Element types of tensors and their conversion to and from fp32.
//
// Every kernel computes in fp32; FLOAT16 and BFLOAT16 are widened on load and
// narrowed on store with round-to-nearest-even. Example:
//
//   uint16_t h = FloatToBf16(1.0f / 3.0f);
//   float f = Bf16ToFloat(h);  // 0.333984375
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

// Converts `n` elements of `src` (FLOAT32, FLOAT16 or BFLOAT16) to fp32.
void ToFloat(DType src_dtype, const void* src, float* dst, size_t n);
// Converts `n` fp32 values to `dst_dtype` (FLOAT32, FLOAT16 or BFLOAT16).
void FromFloat(DType dst_dtype, const float* src, void* dst, size_t n);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_DTYPE_H_
