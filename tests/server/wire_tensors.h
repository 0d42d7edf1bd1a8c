// Wire tensors for the server tests: logical (b, n, s, d) values packed into
// the layouts of the wire contract, and read back.
//
//   Bnsd dims{/*b=*/1, /*n=*/2, /*s=*/3, /*d=*/4};
//   std::vector<double> q = RandomValues(dims.count(), /*seed=*/1);
//   *request.mutable_query() = PackFp32("BSND", dims, q);
//   std::vector<double> out = UnpackFp32("BSND", dims,
//   response.attention_out());
#ifndef ATTNSERVE_TESTS_SERVER_WIRE_TENSORS_H_
#define ATTNSERVE_TESTS_SERVER_WIRE_TENSORS_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "attnserve/v1/attention.pb.h"

namespace attnserve::server::testing {

// Logical dimensions of one attention tensor.
struct Bnsd {
  int64_t b = 1, n = 1, s = 1, d = 1;
  int64_t count() const { return b * n * s * d; }
  // Index of (b, n, s, d) in a logical vector.
  int64_t at(int64_t bi, int64_t ni, int64_t si, int64_t di) const {
    return ((bi * n + ni) * s + si) * d + di;
  }
};

// Shape of `dims` in `layout` ("BSH", "SBH", "BSND" or "BNSD").
std::vector<int64_t> WireShape(std::string_view layout, const Bnsd& dims);

// `logical` (indexed by Bnsd::at) as a tensor of `dtype` (FLOAT32, FLOAT16
// or BFLOAT16) in `layout`.
v1::Tensor Pack(std::string_view layout, const Bnsd& dims,
                const std::vector<double>& logical,
                v1::DataType dtype = v1::DATA_TYPE_FLOAT32);

// The inverse of Pack; fails the current test on a dtype or size mismatch.
std::vector<double> Unpack(std::string_view layout, const Bnsd& dims,
                           const v1::Tensor& tensor);

// The elements of a FLOAT32 tensor in storage order.
std::vector<float> Fp32Values(const v1::Tensor& tensor);

// A FLOAT32 tensor with the given shape and values.
v1::Tensor Fp32Tensor(const std::vector<int64_t>& shape,
                      const std::vector<float>& values);

// `count` reproducible values in [-1, 1).
std::vector<double> RandomValues(int64_t count, uint32_t seed);

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_WIRE_TENSORS_H_
