#include "tests/testing/reference_attention.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

namespace attnserve::test {
namespace {

void RefCheck(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "reference_attention: %s\n", what);
    std::abort();
  }
}

void CheckProblem(const RefProblem& p) {
  const RefDims& d = p.dims;
  RefCheck(d.b > 0 && d.n1 > 0 && d.n2 > 0 && d.s1 > 0 && d.s2 > 0 && d.d > 0 &&
               d.dv > 0,
           "dimensions must be positive");
  RefCheck(d.n1 % d.n2 == 0, "n2 must divide n1");
  RefCheck(p.q.size() == d.q_size(), "q size != B*N1*S1*D");
  RefCheck(p.k.size() == d.k_size(), "k size != B*N2*S2*D");
  RefCheck(p.v.size() == d.v_size(), "v size != B*N2*S2*Dv");
  RefCheck(!p.dropout || (p.keep_prob > 0 && p.keep_prob <= 1),
           "keep_prob must be in (0, 1]");
}

// The factor keep / keep_prob that dropout applies to cell (b, n, i, j).
double DropFactor(const RefProblem& p, int64_t b, int64_t n, int64_t i,
                  int64_t j) {
  if (!p.dropout) return 1.0;
  return p.dropout(b, n, i, j) ? 1.0 / p.keep_prob : 0.0;
}

// Index of row (b, n, i) in a [B][N][S] array.
size_t RowIndex(int64_t n_heads, int64_t s, int64_t b, int64_t n, int64_t i) {
  return static_cast<size_t>((b * n_heads + n) * s + i);
}

// The probabilities of one query row: p[j] = exp(s_j - m) / l for kept keys
// and 0 for masked ones. Returns false for a fully masked row.
bool RowProbabilities(const RefProblem& p, int64_t b, int64_t n, int64_t i,
                      std::vector<double>* probs, double* row_max,
                      double* row_sum) {
  const RefDims& dm = p.dims;
  const int64_t n2 = n / dm.g();
  const double* q = &p.q[RowIndex(dm.n1, dm.s1, b, n, i) * dm.d];
  std::vector<double> scores(static_cast<size_t>(dm.s2));
  std::vector<bool> kept(static_cast<size_t>(dm.s2));
  bool any = false;
  double m = -INFINITY;
  for (int64_t j = 0; j < dm.s2; ++j) {
    const size_t jj = static_cast<size_t>(j);
    kept[jj] = !p.keep || p.keep(b, n, i, j);
    if (!kept[jj]) continue;
    const double* k = &p.k[RowIndex(dm.n2, dm.s2, b, n2, j) * dm.d];
    double qk = 0;
    for (int64_t c = 0; c < dm.d; ++c) qk += q[c] * k[c];
    scores[jj] = p.scale * qk + (p.bias ? p.bias(b, n, i, j) : 0.0);
    m = std::max(m, scores[jj]);
    any = true;
  }
  probs->assign(static_cast<size_t>(dm.s2), 0.0);
  if (!any) {
    *row_max = -static_cast<double>(FLT_MAX);
    *row_sum = static_cast<double>(FLT_MAX);
    return false;
  }
  double l = 0;
  for (size_t j = 0; j < scores.size(); ++j) {
    if (kept[j]) l += std::exp(scores[j] - m);
  }
  for (size_t j = 0; j < scores.size(); ++j) {
    if (kept[j]) (*probs)[j] = std::exp(scores[j] - m) / l;
  }
  *row_max = m;
  *row_sum = l;
  return true;
}

}  // namespace

KeepFn MakeKeepFn(const RefDims& dims, const RefMask& mask) {
  // Strides of (b, n, i, j) into the mask; 0 broadcasts.
  int64_t sb = 0, sn = 0;
  const int64_t si = dims.s2;  // Keys are contiguous (stride 1).
  const bool has_tensor = !mask.values.empty() || !mask.shape.empty();
  if (has_tensor) {
    const std::vector<int64_t>& s = mask.shape;
    if (s.size() == 2) {
      RefCheck(s[0] == dims.s1 && s[1] == dims.s2, "mask shape != [S1,S2]");
    } else {
      RefCheck(s.size() == 4 && s[2] == dims.s1 && s[3] == dims.s2,
               "mask shape must be [S1,S2] or [.,.,S1,S2]");
      RefCheck(s[0] == 1 || s[0] == dims.b, "mask dim 0 must be 1 or B");
      RefCheck(s[1] == 1 || s[1] == dims.n1, "mask dim 1 must be 1 or N1");
      sn = s[1] == 1 ? 0 : dims.s1 * dims.s2;
      sb = s[0] == 1 ? 0 : s[1] * dims.s1 * dims.s2;
    }
    int64_t count = 1;
    for (int64_t x : s) count *= x;
    RefCheck(static_cast<int64_t>(mask.values.size()) == count,
             "mask values size != prod(shape)");
  }
  return [values = mask.values, has_tensor, sb, sn, si, pre = mask.pre_tokens,
          next = mask.next_tokens](int64_t b, int64_t n, int64_t i, int64_t j) {
    if (j < i - pre || j > i + next) return false;
    if (!has_tensor) return true;
    return values[static_cast<size_t>(b * sb + n * sn + i * si + j)] == 0;
  };
}

RefForward ReferenceForward(const RefProblem& p) {
  CheckProblem(p);
  const RefDims& dm = p.dims;
  RefForward r;
  r.out.assign(dm.out_size(), 0.0);
  r.softmax_max.assign(dm.rows(), 0.0);
  r.softmax_sum.assign(dm.rows(), 0.0);
  r.fully_masked.assign(dm.rows(), false);
  std::vector<double> probs;
  for (int64_t b = 0; b < dm.b; ++b) {
    for (int64_t n = 0; n < dm.n1; ++n) {
      const int64_t n2 = n / dm.g();
      for (int64_t i = 0; i < dm.s1; ++i) {
        const size_t row = RowIndex(dm.n1, dm.s1, b, n, i);
        const bool valid = RowProbabilities(
            p, b, n, i, &probs, &r.softmax_max[row], &r.softmax_sum[row]);
        r.fully_masked[row] = !valid;
        if (!valid) continue;
        double* out = &r.out[row * dm.dv];
        for (int64_t j = 0; j < dm.s2; ++j) {
          const double pj =
              probs[static_cast<size_t>(j)] * DropFactor(p, b, n, i, j);
          if (pj == 0) continue;
          const double* v = &p.v[RowIndex(dm.n2, dm.s2, b, n2, j) * dm.dv];
          for (int64_t c = 0; c < dm.dv; ++c) out[c] += pj * v[c];
        }
      }
    }
  }
  return r;
}

namespace {

// Shared by both ReferenceBackward overloads; `attention_in` may be null.
RefBackward Backward(const RefProblem& p, const std::vector<double>& dy,
                     const std::vector<double>* attention_in) {
  CheckProblem(p);
  const RefDims& dm = p.dims;
  RefCheck(dy.size() == dm.out_size(), "dy size != B*N1*S1*Dv");
  RefCheck(attention_in == nullptr || attention_in->size() == dm.out_size(),
           "attention_in size != B*N1*S1*Dv");
  RefBackward r;
  r.dq.assign(dm.q_size(), 0.0);
  r.dk.assign(dm.k_size(), 0.0);
  r.dv.assign(dm.v_size(), 0.0);
  r.unused_keys.assign(static_cast<size_t>(dm.b * dm.n2 * dm.s2), true);
  if (p.record_ds) r.ds.assign(dm.rows() * static_cast<size_t>(dm.s2), 0.0);
  std::vector<double> probs;
  std::vector<double> drop(static_cast<size_t>(dm.s2));
  std::vector<double> out(static_cast<size_t>(dm.dv));
  for (int64_t b = 0; b < dm.b; ++b) {
    for (int64_t n = 0; n < dm.n1; ++n) {
      const int64_t n2 = n / dm.g();
      for (int64_t i = 0; i < dm.s1; ++i) {
        const size_t row = RowIndex(dm.n1, dm.s1, b, n, i);
        double m = 0, l = 0;
        if (!RowProbabilities(p, b, n, i, &probs, &m, &l)) continue;
        for (int64_t j = 0; j < dm.s2; ++j) {
          drop[static_cast<size_t>(j)] = DropFactor(p, b, n, i, j);
        }
        const double* q = &p.q[row * dm.d];
        const double* g = &dy[row * dm.dv];
        // out_i (with dropout) and D_i = dy_i . out_i.
        if (attention_in != nullptr) {
          std::copy_n(&(*attention_in)[row * dm.dv], dm.dv, out.begin());
        } else {
          std::fill(out.begin(), out.end(), 0.0);
          for (int64_t j = 0; j < dm.s2; ++j) {
            const double pj =
                probs[static_cast<size_t>(j)] * drop[static_cast<size_t>(j)];
            if (pj == 0) continue;
            const double* v = &p.v[RowIndex(dm.n2, dm.s2, b, n2, j) * dm.dv];
            for (int64_t c = 0; c < dm.dv; ++c) out[c] += pj * v[c];
          }
        }
        double d_i = 0;
        for (int64_t c = 0; c < dm.dv; ++c) d_i += g[c] * out[c];
        double* dq = &r.dq[row * dm.d];
        for (int64_t j = 0; j < dm.s2; ++j) {
          const double pj = probs[static_cast<size_t>(j)];
          if (pj == 0) continue;
          const double fj = drop[static_cast<size_t>(j)];
          const size_t kv_row = RowIndex(dm.n2, dm.s2, b, n2, j);
          r.unused_keys[kv_row] = false;
          const double* k = &p.k[kv_row * dm.d];
          const double* v = &p.v[kv_row * dm.dv];
          double dp = 0;
          for (int64_t c = 0; c < dm.dv; ++c) dp += g[c] * v[c];
          const double ds = pj * (dp * fj - d_i);
          if (p.record_ds) r.ds[row * static_cast<size_t>(dm.s2) + j] = ds;
          double* dk = &r.dk[kv_row * dm.d];
          double* dv = &r.dv[kv_row * dm.dv];
          for (int64_t c = 0; c < dm.d; ++c) {
            dq[c] += p.scale * ds * k[c];
            dk[c] += p.scale * ds * q[c];
          }
          if (fj == 0) continue;
          for (int64_t c = 0; c < dm.dv; ++c) dv[c] += pj * fj * g[c];
        }
      }
    }
  }
  return r;
}

}  // namespace

RefBackward ReferenceBackward(const RefProblem& p,
                              const std::vector<double>& dy) {
  return Backward(p, dy, nullptr);
}

RefBackward ReferenceBackward(const RefProblem& p,
                              const std::vector<double>& dy,
                              const std::vector<double>& attention_in) {
  return Backward(p, dy, &attention_in);
}

}  // namespace attnserve::test
