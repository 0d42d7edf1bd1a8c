// Building and reading attnserve.v1.Tensor messages from fp32 values.
//
// A wire Tensor is dtype + shape + contiguous little-endian row-major bytes.
// These helpers convert fp32 values to FLOAT32, FLOAT16 or BFLOAT16 (round to
// nearest even) and back, and check that the byte size matches the shape:
//
//   absl::StatusOr<v1::Tensor> q =
//       MakeTensor(values, {1, 8, 1024, 128}, v1::DATA_TYPE_BFLOAT16);
//   absl::StatusOr<std::vector<float>> back = TensorToFloats(*q);
//
// Dtype names, item sizes and size checks are the wire library's
// (attnserve/wire/), the same the server applies. All functions are
// thread-safe (no shared state).
#ifndef ATTNSERVE_CLIENT_TENSOR_HELPERS_H_
#define ATTNSERVE_CLIENT_TENSOR_HELPERS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/dtype.h"

namespace attnserve {

// Bytes per element; INVALID_ARGUMENT for DATA_TYPE_UNSPECIFIED or a value
// outside the enum.
using wire::ItemSize;

// The enum name without its prefix, e.g. "BFLOAT16"; "?<n>" for values
// outside the enum.
using wire::DataTypeName;

// Parses a dtype name, case-insensitively: "fp32"/"float32"/"float",
// "fp16"/"float16"/"half", "bf16"/"bfloat16", and the enum names with or
// without the "DATA_TYPE_" prefix (e.g. "INT32"). INVALID_ARGUMENT otherwise.
absl::StatusOr<v1::DataType> ParseDataType(absl::string_view name);

// prod(shape); INVALID_ARGUMENT naming "tensor.shape[i]" if a dimension is
// negative or "tensor.shape" if the product overflows int64.
absl::StatusOr<int64_t> NumElements(const std::vector<int64_t>& shape);

// A FLOAT32, FLOAT16 or BFLOAT16 tensor holding `values` (FLOAT16/BFLOAT16
// rounded to nearest even; overflow gives inf, NaN stays NaN).
// INVALID_ARGUMENT if values.size() != prod(shape) or dtype is not one of the
// three floating types.
absl::StatusOr<v1::Tensor> MakeTensor(const std::vector<float>& values,
                                      const std::vector<int64_t>& shape,
                                      v1::DataType dtype);

// An INT32 tensor (e.g. NSA topk_indices). INVALID_ARGUMENT if
// values.size() != prod(shape).
absl::StatusOr<v1::Tensor> MakeInt32Tensor(const std::vector<int32_t>& values,
                                           const std::vector<int64_t>& shape);

// The elements of a FLOAT32, FLOAT16 or BFLOAT16 tensor widened to fp32.
// INVALID_ARGUMENT if the dtype is another one or data.size() is not
// prod(shape) * itemsize.
absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor);

// `n` values uniform in [lo, hi) from a 64-bit Mersenne Twister seeded with
// `seed`; the same seed gives the same values on every platform.
std::vector<float> RandomFloats(size_t n, uint64_t seed, float lo = -1.0f,
                                float hi = 1.0f);

// MakeTensor(RandomFloats(prod(shape), seed, lo, hi), shape, dtype).
absl::StatusOr<v1::Tensor> MakeRandomTensor(const std::vector<int64_t>& shape,
                                            v1::DataType dtype, uint64_t seed,
                                            float lo = -1.0f, float hi = 1.0f);

// A tensor field naming the resident tensor `handle` (no data), e.g.
// *request.mutable_key() = TensorHandle(put->handle()). The server checks
// `dtype` and `shape` against the stored tensor when they are given
// (UNSPECIFIED / empty = not stated).
v1::Tensor TensorHandle(const std::string& handle,
                        v1::DataType dtype = v1::DATA_TYPE_UNSPECIFIED,
                        const std::vector<int64_t>& shape = {});

// BOOL [sq, skv] causal mask with 1 (= masked) where column j > row i (CANN's
// top-left causal convention, for sparse_mode 0). INVALID_ARGUMENT for
// negative sizes.
absl::StatusOr<v1::Tensor> MakeCausalMask(int64_t sq, int64_t skv);

}  // namespace attnserve

#endif  // ATTNSERVE_CLIENT_TENSOR_HELPERS_H_
