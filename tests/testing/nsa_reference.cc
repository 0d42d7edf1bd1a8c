#include "tests/testing/nsa_reference.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace attnserve::test {
namespace {

void RefCheck(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "nsa_reference: %s\n", what);
    std::abort();
  }
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

void CheckProblem(const NsaRefProblem& p) {
  RefCheck(!p.seq_q.empty() && p.seq_q.size() == p.seq_kv.size(),
           "seq_q and seq_kv must have one entry per batch");
  RefCheck(p.n1 > 0 && p.n2 > 0 && p.n1 % p.n2 == 0, "n2 must divide n1");
  RefCheck(p.d > 0 && p.dv > 0 && p.block_size > 0 && p.block_count > 0,
           "dimensions must be positive");
  const size_t t1 = static_cast<size_t>(p.t1()),
               t2 = static_cast<size_t>(p.t2());
  RefCheck(p.q.size() == t1 * static_cast<size_t>(p.n1 * p.d), "q size");
  RefCheck(p.k.size() == t2 * static_cast<size_t>(p.n2 * p.d), "k size");
  RefCheck(p.v.size() == t2 * static_cast<size_t>(p.n2 * p.dv), "v size");
  RefCheck(p.topk.size() == t1 * static_cast<size_t>(p.n2 * p.block_count),
           "topk size");
}

// The gathered keys of one (token, query head): global key rows in slot
// order, the scores of the kept ones, and the probabilities.
struct Gathered {
  std::vector<int64_t> kv_rows;  // Global key token of each kept slot.
  std::vector<double> k, v;      // [slots][D], [slots][Dv]
  std::vector<double> scores;    // [slots]
  std::vector<double> probs;     // [slots]
  double max = 0, sum = 0;
};

// Gathers and normalizes the selection of token t (batch b, local position
// i, first key token kv0) for query head n. Returns false if nothing is
// kept.
bool Gather(const NsaRefProblem& p, int64_t t, int64_t b, int64_t i,
            int64_t kv0, int64_t n, Gathered* out) {
  const int64_t n2 = n / p.g();
  const int64_t blocks = p.seq_kv[static_cast<size_t>(b)] / p.block_size;
  *out = Gathered();
  for (int64_t c = 0; c < p.block_count; ++c) {
    const int64_t idx =
        p.topk[static_cast<size_t>((t * p.n2 + n2) * p.block_count + c)];
    RefCheck(idx >= 0 && idx < blocks, "topk index outside its batch");
    for (int64_t r = 0; r < p.block_size; ++r) {
      const int64_t pos = idx * p.block_size + r;
      if (p.causal && pos > i) continue;
      const int64_t row = kv0 + pos;
      out->kv_rows.push_back(row);
      const double* k = &p.k[static_cast<size_t>((row * p.n2 + n2) * p.d)];
      const double* v = &p.v[static_cast<size_t>((row * p.n2 + n2) * p.dv)];
      out->k.insert(out->k.end(), k, k + p.d);
      out->v.insert(out->v.end(), v, v + p.dv);
    }
  }
  const size_t slots = out->kv_rows.size();
  if (slots == 0) {
    out->max = -static_cast<double>(FLT_MAX);
    out->sum = static_cast<double>(FLT_MAX);
    return false;
  }
  const double* q = &p.q[static_cast<size_t>((t * p.n1 + n) * p.d)];
  out->scores.resize(slots);
  out->max = -INFINITY;
  for (size_t s = 0; s < slots; ++s) {
    double qk = 0;
    for (int64_t c = 0; c < p.d; ++c) {
      qk +=
          q[c] * out->k[s * static_cast<size_t>(p.d) + static_cast<size_t>(c)];
    }
    out->scores[s] = p.scale * qk;
    out->max = std::max(out->max, out->scores[s]);
  }
  out->sum = 0;
  for (double s : out->scores) out->sum += std::exp(s - out->max);
  out->probs.resize(slots);
  for (size_t s = 0; s < slots; ++s) {
    out->probs[s] = std::exp(out->scores[s] - out->max) / out->sum;
  }
  return true;
}

// Calls fn(t, b, i, kv0) for every query token.
template <typename Fn>
void ForEachToken(const NsaRefProblem& p, Fn fn) {
  int64_t t = 0, kv0 = 0;
  for (size_t b = 0; b < p.seq_q.size(); ++b) {
    for (int64_t i = 0; i < p.seq_q[b]; ++i, ++t) {
      fn(t, static_cast<int64_t>(b), i, kv0);
    }
    kv0 += p.seq_kv[b];
  }
}

}  // namespace

int64_t NsaRefProblem::t1() const { return Sum(seq_q); }
int64_t NsaRefProblem::t2() const { return Sum(seq_kv); }

NsaRefForward NsaReferenceForward(const NsaRefProblem& p) {
  CheckProblem(p);
  const size_t rows = static_cast<size_t>(p.t1() * p.n1);
  NsaRefForward r;
  r.out.assign(rows * static_cast<size_t>(p.dv), 0.0);
  r.softmax_max.assign(rows, 0.0);
  r.softmax_sum.assign(rows, 0.0);
  r.fully_masked.assign(rows, false);
  Gathered gathered;
  ForEachToken(p, [&](int64_t t, int64_t b, int64_t i, int64_t kv0) {
    for (int64_t n = 0; n < p.n1; ++n) {
      const size_t row = static_cast<size_t>(t * p.n1 + n);
      const bool kept = Gather(p, t, b, i, kv0, n, &gathered);
      r.softmax_max[row] = gathered.max;
      r.softmax_sum[row] = gathered.sum;
      r.fully_masked[row] = !kept;
      double* out = &r.out[row * static_cast<size_t>(p.dv)];
      for (size_t s = 0; s < gathered.probs.size(); ++s) {
        const double* v = &gathered.v[s * static_cast<size_t>(p.dv)];
        for (int64_t c = 0; c < p.dv; ++c) out[c] += gathered.probs[s] * v[c];
      }
    }
  });
  return r;
}

NsaRefBackward NsaReferenceBackward(const NsaRefProblem& p,
                                    const std::vector<double>& dy) {
  CheckProblem(p);
  RefCheck(dy.size() == static_cast<size_t>(p.t1() * p.n1 * p.dv),
           "dy size != T1*N1*Dv");
  NsaRefBackward r;
  r.dq.assign(p.q.size(), 0.0);
  r.dk.assign(p.k.size(), 0.0);
  r.dv.assign(p.v.size(), 0.0);
  r.key_uses.assign(static_cast<size_t>(p.t2() * p.n2), 0);
  Gathered gathered;
  std::vector<double> out(static_cast<size_t>(p.dv));
  ForEachToken(p, [&](int64_t t, int64_t b, int64_t i, int64_t kv0) {
    for (int64_t n = 0; n < p.n1; ++n) {
      if (!Gather(p, t, b, i, kv0, n, &gathered)) continue;
      const int64_t n2 = n / p.g();
      const size_t row = static_cast<size_t>(t * p.n1 + n);
      const double* q = &p.q[row * static_cast<size_t>(p.d)];
      const double* g = &dy[row * static_cast<size_t>(p.dv)];
      const size_t slots = gathered.kv_rows.size();
      std::fill(out.begin(), out.end(), 0.0);
      for (size_t s = 0; s < slots; ++s) {
        for (int64_t c = 0; c < p.dv; ++c) {
          out[static_cast<size_t>(c)] +=
              gathered.probs[s] *
              gathered
                  .v[s * static_cast<size_t>(p.dv) + static_cast<size_t>(c)];
        }
      }
      double d_row = 0;
      for (int64_t c = 0; c < p.dv; ++c)
        d_row += g[c] * out[static_cast<size_t>(c)];
      double* dq = &r.dq[row * static_cast<size_t>(p.d)];
      for (size_t s = 0; s < slots; ++s) {
        const double* k = &gathered.k[s * static_cast<size_t>(p.d)];
        const double* v = &gathered.v[s * static_cast<size_t>(p.dv)];
        double dp = 0;
        for (int64_t c = 0; c < p.dv; ++c) dp += g[c] * v[c];
        const double pr = gathered.probs[s];
        const double ds = pr * (dp - d_row);
        const size_t kv = static_cast<size_t>(gathered.kv_rows[s] * p.n2 + n2);
        ++r.key_uses[kv];
        double* dk = &r.dk[kv * static_cast<size_t>(p.d)];
        double* dv = &r.dv[kv * static_cast<size_t>(p.dv)];
        for (int64_t c = 0; c < p.d; ++c) {
          dq[c] += p.scale * ds * k[c];
          dk[c] += p.scale * ds * q[c];
        }
        for (int64_t c = 0; c < p.dv; ++c) dv[c] += pr * g[c];
      }
    }
  });
  r.unused_keys.resize(r.key_uses.size());
  for (size_t i = 0; i < r.key_uses.size(); ++i) {
    r.unused_keys[i] = r.key_uses[i] == 0;
  }
  return r;
}

}  // namespace attnserve::test
