#include "tests/server/wire_tensors.h"

#include <cstring>
#include <random>

#include "attnserve/core/dtype.h"
#include "gtest/gtest.h"

namespace attnserve::server::testing {
namespace {

// Storage offset of logical (b, n, s, d), per the wire contract's table.
int64_t Offset(std::string_view layout, const Bnsd& x, int64_t b, int64_t n,
               int64_t s, int64_t d) {
  if (layout == "SBH") return ((s * x.b + b) * x.n + n) * x.d + d;
  if (layout == "BNSD") return ((b * x.n + n) * x.s + s) * x.d + d;
  return ((b * x.s + s) * x.n + n) * x.d + d;  // BSH, BSND.
}

core::DType CoreDType(v1::DataType dtype) {
  switch (dtype) {
    case v1::DATA_TYPE_FLOAT16:
      return core::DType::kFloat16;
    case v1::DATA_TYPE_BFLOAT16:
      return core::DType::kBFloat16;
    default:
      return core::DType::kFloat32;
  }
}

}  // namespace

std::vector<int64_t> WireShape(std::string_view layout, const Bnsd& x) {
  if (layout == "BSH") return {x.b, x.s, x.n * x.d};
  if (layout == "SBH") return {x.s, x.b, x.n * x.d};
  if (layout == "BNSD") return {x.b, x.n, x.s, x.d};
  return {x.b, x.s, x.n, x.d};
}

v1::Tensor Pack(std::string_view layout, const Bnsd& dims,
                const std::vector<double>& logical, v1::DataType dtype) {
  std::vector<float> stored(static_cast<size_t>(dims.count()));
  for (int64_t b = 0; b < dims.b; ++b) {
    for (int64_t n = 0; n < dims.n; ++n) {
      for (int64_t s = 0; s < dims.s; ++s) {
        for (int64_t d = 0; d < dims.d; ++d) {
          stored[static_cast<size_t>(Offset(layout, dims, b, n, s, d))] =
              static_cast<float>(
                  logical[static_cast<size_t>(dims.at(b, n, s, d))]);
        }
      }
    }
  }
  const core::DType core_dtype = CoreDType(dtype);
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  for (int64_t dim : WireShape(layout, dims)) tensor.add_shape(dim);
  std::string* data = tensor.mutable_data();
  data->resize(stored.size() * core::ItemSize(core_dtype));
  core::FromFloat(core_dtype, stored.data(), data->data(), stored.size());
  return tensor;
}

std::vector<double> Unpack(std::string_view layout, const Bnsd& dims,
                           const v1::Tensor& tensor) {
  std::vector<double> logical(static_cast<size_t>(dims.count()));
  const std::vector<int64_t> want = WireShape(layout, dims);
  EXPECT_EQ(std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()),
            want);
  const core::DType dtype = CoreDType(tensor.dtype());
  if (tensor.data().size() !=
      static_cast<size_t>(dims.count()) * core::ItemSize(dtype)) {
    ADD_FAILURE() << "tensor has " << tensor.data().size() << " bytes";
    return logical;
  }
  std::vector<float> stored(static_cast<size_t>(dims.count()));
  core::ToFloat(dtype, tensor.data().data(), stored.data(), stored.size());
  for (int64_t b = 0; b < dims.b; ++b) {
    for (int64_t n = 0; n < dims.n; ++n) {
      for (int64_t s = 0; s < dims.s; ++s) {
        for (int64_t d = 0; d < dims.d; ++d) {
          logical[static_cast<size_t>(dims.at(b, n, s, d))] =
              stored[static_cast<size_t>(Offset(layout, dims, b, n, s, d))];
        }
      }
    }
  }
  return logical;
}

std::vector<float> Fp32Values(const v1::Tensor& tensor) {
  EXPECT_EQ(tensor.dtype(), v1::DATA_TYPE_FLOAT32);
  std::vector<float> values(tensor.data().size() / sizeof(float));
  std::memcpy(values.data(), tensor.data().data(),
              values.size() * sizeof(float));
  return values;
}

v1::Tensor Fp32Tensor(const std::vector<int64_t>& shape,
                      const std::vector<float>& values) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::DATA_TYPE_FLOAT32);
  for (int64_t dim : shape) tensor.add_shape(dim);
  tensor.set_data(values.data(), values.size() * sizeof(float));
  return tensor;
}

std::vector<double> RandomValues(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> values(static_cast<size_t>(count));
  for (double& v : values) v = uniform(rng);
  return values;
}

}  // namespace attnserve::server::testing
