#include "tests/testing/tensors.h"

#include <cstring>
#include <random>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnserve::test {
namespace {

std::vector<float> ToFloats(const std::vector<double>& values) {
  return std::vector<float>(values.begin(), values.end());
}

absl::Status CheckTensor(const core::HostTensor& tensor,
                         const std::vector<int64_t>& shape, core::DType dtype) {
  if (tensor.dtype != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype is ", core::DTypeName(tensor.dtype), ", expected ",
                     core::DTypeName(dtype)));
  }
  if (tensor.shape != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape is [", absl::StrJoin(tensor.shape, ","),
                     "], expected [", absl::StrJoin(shape, ","), "]"));
  }
  int64_t count = 1;
  for (int64_t x : shape) count *= x;
  const size_t expected = static_cast<size_t>(count) * core::ItemSize(dtype);
  if (tensor.bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte size is ", tensor.bytes.size(), ", expected ", expected));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> LayoutShape(core::Layout layout, const Bnsd& m) {
  switch (layout) {
    case core::Layout::kBSH:
      return {m.b, m.s, m.n * m.d};
    case core::Layout::kSBH:
      return {m.s, m.b, m.n * m.d};
    case core::Layout::kBSND:
      return {m.b, m.s, m.n, m.d};
    case core::Layout::kBNSD:
      return {m.b, m.n, m.s, m.d};
    case core::Layout::kTND:
      break;
  }
  return {};
}

int64_t LayoutOffset(core::Layout layout, const Bnsd& m, int64_t b, int64_t n,
                     int64_t s, int64_t d) {
  switch (layout) {
    case core::Layout::kBSH:
    case core::Layout::kBSND:
      return ((b * m.s + s) * m.n + n) * m.d + d;
    case core::Layout::kSBH:
      return ((s * m.b + b) * m.n + n) * m.d + d;
    case core::Layout::kBNSD:
      return ((b * m.n + n) * m.s + s) * m.d + d;
    case core::Layout::kTND:
      break;
  }
  return -1;
}

std::vector<double> RandomUniform(size_t count, uint64_t seed, double lo,
                                  double hi) {
  std::mt19937_64 gen(seed);
  std::vector<double> out(count);
  for (double& x : out) {
    // 53 random bits -> [0, 1): the same numbers with every standard library.
    const double u = static_cast<double>(gen() >> 11) * 0x1p-53;
    x = lo + (hi - lo) * u;
  }
  return out;
}

std::vector<double> RoundToDType(const std::vector<double>& values,
                                 core::DType dtype) {
  const std::vector<float> f = ToFloats(values);
  std::string bytes(f.size() * core::ItemSize(dtype), '\0');
  core::FromFloat(dtype, f.data(), bytes.data(), f.size());
  std::vector<float> back(f.size());
  core::ToFloat(dtype, bytes.data(), back.data(), back.size());
  return std::vector<double>(back.begin(), back.end());
}

core::HostTensor PackBnsd(const std::vector<double>& values, const Bnsd& m,
                          core::Layout layout, core::DType dtype) {
  std::vector<double> ordered(values.size());
  for (int64_t b = 0; b < m.b; ++b) {
    for (int64_t n = 0; n < m.n; ++n) {
      for (int64_t s = 0; s < m.s; ++s) {
        for (int64_t d = 0; d < m.d; ++d) {
          const size_t src =
              static_cast<size_t>(((b * m.n + n) * m.s + s) * m.d + d);
          ordered[static_cast<size_t>(LayoutOffset(layout, m, b, n, s, d))] =
              values.at(src);
        }
      }
    }
  }
  return PackFlat(ordered, LayoutShape(layout, m), dtype);
}

absl::StatusOr<std::vector<double>> UnpackBnsd(const core::HostTensor& tensor,
                                               const Bnsd& m,
                                               core::Layout layout,
                                               core::DType dtype) {
  absl::StatusOr<std::vector<double>> flat =
      UnpackFlat(tensor, LayoutShape(layout, m), dtype);
  if (!flat.ok()) return flat.status();
  std::vector<double> out(m.size());
  for (int64_t b = 0; b < m.b; ++b) {
    for (int64_t n = 0; n < m.n; ++n) {
      for (int64_t s = 0; s < m.s; ++s) {
        for (int64_t d = 0; d < m.d; ++d) {
          out[static_cast<size_t>(((b * m.n + n) * m.s + s) * m.d + d)] =
              (*flat)[static_cast<size_t>(LayoutOffset(layout, m, b, n, s, d))];
        }
      }
    }
  }
  return out;
}

core::HostTensor PackFlat(const std::vector<double>& values,
                          std::vector<int64_t> shape, core::DType dtype) {
  core::HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const std::vector<float> f = ToFloats(values);
  t.bytes.assign(f.size() * core::ItemSize(dtype), '\0');
  core::FromFloat(dtype, f.data(), t.bytes.data(), f.size());
  return t;
}

absl::StatusOr<std::vector<double>> UnpackFlat(
    const core::HostTensor& tensor, const std::vector<int64_t>& shape,
    core::DType dtype) {
  absl::Status st = CheckTensor(tensor, shape, dtype);
  if (!st.ok()) return st;
  const size_t count = tensor.bytes.size() / core::ItemSize(dtype);
  std::vector<float> f(count);
  core::ToFloat(dtype, tensor.bytes.data(), f.data(), count);
  return std::vector<double>(f.begin(), f.end());
}

core::HostTensor PackBytes(const std::vector<uint8_t>& values,
                           std::vector<int64_t> shape, core::DType dtype) {
  core::HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size());
  return t;
}

core::HostTensor PackSoftmaxStat(const std::vector<double>& rows, int64_t b,
                                 int64_t n, int64_t s) {
  std::vector<double> lanes;
  lanes.reserve(rows.size() * 8);
  for (double x : rows) lanes.insert(lanes.end(), 8, x);
  return PackFlat(lanes, {b, n, s, 8}, core::DType::kFloat32);
}

}  // namespace attnserve::test
