#include "tests/server/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace attnserve::server::testing {

RefResult ReferenceAttention(const RefProblem& p) {
  const Bnsd qd = p.q_dims(), kd = p.k_dims(), vd = p.v_dims(),
             od = p.out_dims();
  const int64_t group = p.n1 / p.n2;
  const bool backward = !p.dy.empty();
  RefResult r;
  r.out.assign(static_cast<size_t>(od.count()), 0.0);
  r.row_max.assign(static_cast<size_t>(p.b * p.n1 * p.s1), 0.0);
  r.row_sum.assign(r.row_max.size(), 0.0);
  if (backward) {
    r.dq.assign(static_cast<size_t>(qd.count()), 0.0);
    r.dk.assign(static_cast<size_t>(kd.count()), 0.0);
    r.dv.assign(static_cast<size_t>(vd.count()), 0.0);
  }
  auto at = [](const std::vector<double>& x, int64_t i) {
    return x[static_cast<size_t>(i)];
  };
  std::vector<double> prob(static_cast<size_t>(p.s2));
  for (int64_t b = 0; b < p.b; ++b) {
    for (int64_t n = 0; n < p.n1; ++n) {
      const int64_t kn = n / group;
      for (int64_t i = 0; i < p.s1; ++i) {
        double row_max = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < p.s2; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < p.d; ++c) {
            dot += at(p.q, qd.at(b, n, i, c)) * at(p.k, kd.at(b, kn, j, c));
          }
          prob[static_cast<size_t>(j)] = p.scale * dot;
          row_max = std::max(row_max, p.scale * dot);
        }
        double row_sum = 0;
        for (double& s : prob) {
          s = std::exp(s - row_max);
          row_sum += s;
        }
        for (double& s : prob) s /= row_sum;
        const int64_t row = (b * p.n1 + n) * p.s1 + i;
        r.row_max[static_cast<size_t>(row)] = row_max;
        r.row_sum[static_cast<size_t>(row)] = row_sum;
        for (int64_t c = 0; c < p.dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < p.s2; ++j) {
            acc += prob[static_cast<size_t>(j)] * at(p.v, vd.at(b, kn, j, c));
          }
          r.out[static_cast<size_t>(od.at(b, n, i, c))] = acc;
        }
        if (!backward) continue;
        double delta = 0;  // D_i = sum_c dy * out.
        for (int64_t c = 0; c < p.dv; ++c) {
          delta += at(p.dy, od.at(b, n, i, c)) * at(r.out, od.at(b, n, i, c));
        }
        for (int64_t j = 0; j < p.s2; ++j) {
          double dp = 0;
          for (int64_t c = 0; c < p.dv; ++c) {
            dp += at(p.dy, od.at(b, n, i, c)) * at(p.v, vd.at(b, kn, j, c));
          }
          const double pij = prob[static_cast<size_t>(j)];
          const double ds = pij * (dp - delta);
          for (int64_t c = 0; c < p.d; ++c) {
            r.dq[static_cast<size_t>(qd.at(b, n, i, c))] +=
                p.scale * ds * at(p.k, kd.at(b, kn, j, c));
            r.dk[static_cast<size_t>(kd.at(b, kn, j, c))] +=
                p.scale * ds * at(p.q, qd.at(b, n, i, c));
          }
          for (int64_t c = 0; c < p.dv; ++c) {
            r.dv[static_cast<size_t>(vd.at(b, kn, j, c))] +=
                pij * at(p.dy, od.at(b, n, i, c));
          }
        }
      }
    }
  }
  return r;
}

}  // namespace attnserve::server::testing
