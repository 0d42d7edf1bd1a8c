// Plain double-precision attention (no masks, dropout or pse), written
// directly from the definition for the server round-trip tests:
//
//   s = scale * q . k,  P = softmax_j(s),  out = P v
//   dP = dy . v,  D = rowsum(dy * out),  dS = P (dP - D)
//   dq = scale dS k,  dk = scale sum_group dS^T q,  dv = sum_group P^T dy
//
// Query head n reads key/value head n / (n1 / n2). Tensors are logical
// vectors indexed like testing::Bnsd::at.
#ifndef ATTNSERVE_TESTS_SERVER_REFERENCE_H_
#define ATTNSERVE_TESTS_SERVER_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {

struct RefProblem {
  int64_t b = 1, n1 = 1, n2 = 1, s1 = 1, s2 = 1, d = 1, dv = 1;
  double scale = 1.0;
  std::vector<double> q, k, v, dy;  // dy may be empty (forward only).

  Bnsd q_dims() const { return {b, n1, s1, d}; }
  Bnsd k_dims() const { return {b, n2, s2, d}; }
  Bnsd v_dims() const { return {b, n2, s2, dv}; }
  Bnsd out_dims() const { return {b, n1, s1, dv}; }
};

struct RefResult {
  std::vector<double> out;         // out_dims().
  std::vector<double> row_max;     // [b, n1, s1].
  std::vector<double> row_sum;     // [b, n1, s1], sum of exp(s - max).
  std::vector<double> dq, dk, dv;  // Filled when dy is given.
};

RefResult ReferenceAttention(const RefProblem& p);

}  // namespace attnserve::server::testing

#endif  // ATTNSERVE_TESTS_SERVER_REFERENCE_H_
