#include "attnserve/client/tensor_helpers.h"

#include <limits>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/tensor.h"
#include "attnserve/wire/tensor.h"

namespace attnserve {
namespace {

// The core dtype of a FLOAT32, FLOAT16 or BFLOAT16 wire dtype.
absl::StatusOr<core::DType> FloatingCoreType(v1::DataType dtype) {
  absl::StatusOr<core::DType> core_dtype = wire::ToCoreDType(dtype, "dtype");
  if (core_dtype.ok() && core::IsFloatingCompute(*core_dtype)) {
    return core_dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: must be FLOAT32, FLOAT16 or BFLOAT16, got ",
                   DataTypeName(dtype)));
}

void SetShape(const std::vector<int64_t>& shape, v1::Tensor* tensor) {
  tensor->mutable_shape()->Assign(shape.begin(), shape.end());
}

absl::Status CheckCount(size_t count, const std::vector<int64_t>& shape) {
  absl::StatusOr<int64_t> n = NumElements(shape);
  if (!n.ok()) return n.status();
  if (static_cast<uint64_t>(*n) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("values: shape [", absl::StrJoin(shape, ","), "] needs ",
                     *n, " elements, got ", count));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::DataType> ParseDataType(absl::string_view name) {
  std::string upper = absl::AsciiStrToUpper(name);
  if (upper == "FP32" || upper == "FLOAT") return v1::DATA_TYPE_FLOAT32;
  if (upper == "FP16" || upper == "HALF") return v1::DATA_TYPE_FLOAT16;
  if (upper == "BF16") return v1::DATA_TYPE_BFLOAT16;
  if (!absl::StartsWith(upper, "DATA_TYPE_")) upper = "DATA_TYPE_" + upper;
  v1::DataType dtype;
  if (v1::DataType_Parse(upper, &dtype) && dtype != v1::DATA_TYPE_UNSPECIFIED) {
    return dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: unknown data type \"", name,
                   "\" (expected fp32, fp16, bf16 or a DataType name)"));
}

absl::StatusOr<int64_t> NumElements(const std::vector<int64_t>& shape) {
  return core::CheckedNumElements(shape, "tensor");
}

absl::StatusOr<v1::Tensor> MakeTensor(const std::vector<float>& values,
                                      const std::vector<int64_t>& shape,
                                      v1::DataType dtype) {
  absl::StatusOr<core::DType> core_dtype = FloatingCoreType(dtype);
  if (!core_dtype.ok()) return core_dtype.status();
  absl::Status count = CheckCount(values.size(), shape);
  if (!count.ok()) return count;
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  SetShape(shape, &tensor);
  std::string* data = tensor.mutable_data();
  data->resize(values.size() * core::ItemSize(*core_dtype));
  core::FromFloat(*core_dtype, values.data(), data->data(), values.size());
  return tensor;
}

absl::StatusOr<v1::Tensor> MakeInt32Tensor(const std::vector<int32_t>& values,
                                           const std::vector<int64_t>& shape) {
  absl::Status count = CheckCount(values.size(), shape);
  if (!count.ok()) return count;
  v1::Tensor tensor;
  tensor.set_dtype(v1::DATA_TYPE_INT32);
  SetShape(shape, &tensor);
  tensor.set_data(values.data(), values.size() * sizeof(int32_t));
  return tensor;
}

absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor) {
  absl::StatusOr<core::DType> core_dtype = FloatingCoreType(tensor.dtype());
  if (!core_dtype.ok()) return core_dtype.status();
  absl::Status data = wire::CheckData(tensor, "tensor");
  if (!data.ok()) return data;
  const absl::StatusOr<int64_t> n = wire::ElementCount(tensor, "tensor");
  std::vector<float> values(static_cast<size_t>(*n));
  core::ToFloat(*core_dtype, tensor.data().data(), values.data(),
                values.size());
  return values;
}

std::vector<float> RandomFloats(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 engine(seed);
  std::vector<float> values(n);
  const double width = static_cast<double>(hi) - static_cast<double>(lo);
  for (float& v : values) {
    // The top 53 bits give a double uniform in [0, 1), the same everywhere
    // (std::uniform_real_distribution is implementation-defined).
    const double unit = static_cast<double>(engine() >> 11) * 0x1.0p-53;
    v = static_cast<float>(lo + unit * width);
    if (v >= hi) v = lo;  // rounding to float may reach hi
  }
  return values;
}

absl::StatusOr<v1::Tensor> MakeRandomTensor(const std::vector<int64_t>& shape,
                                            v1::DataType dtype, uint64_t seed,
                                            float lo, float hi) {
  absl::StatusOr<int64_t> n = NumElements(shape);
  if (!n.ok()) return n.status();
  return MakeTensor(RandomFloats(static_cast<size_t>(*n), seed, lo, hi), shape,
                    dtype);
}

absl::StatusOr<v1::Tensor> MakeCausalMask(int64_t sq, int64_t skv) {
  absl::StatusOr<int64_t> n = NumElements({sq, skv});
  if (!n.ok()) return n.status();
  v1::Tensor mask;
  mask.set_dtype(v1::DATA_TYPE_BOOL);
  SetShape({sq, skv}, &mask);
  std::string* data = mask.mutable_data();
  data->assign(static_cast<size_t>(*n), '\0');
  for (int64_t i = 0; i < sq; ++i) {
    for (int64_t j = i + 1; j < skv; ++j) {
      (*data)[static_cast<size_t>(i * skv + j)] = 1;
    }
  }
  return mask;
}

v1::Tensor TensorHandle(const std::string& handle, v1::DataType dtype,
                        const std::vector<int64_t>& shape) {
  v1::Tensor tensor;
  tensor.set_handle(handle);
  tensor.set_dtype(dtype);
  SetShape(shape, &tensor);
  return tensor;
}

}  // namespace attnserve
