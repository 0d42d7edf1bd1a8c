// A plain float64 reference of NSA selected attention and its gradient.
//
// For every query token and head it gathers the selected key/value rows
// explicitly (topk order, duplicates repeated), masks them with the causal
// rule of sparse_mode 2, and applies the dense formulas of docs/semantics.md,
// "NSA selected attention":
//
//   NsaRefProblem p;
//   p.seq_q = {70, 130};  p.seq_kv = {128, 192};   // per-batch lengths
//   p.n1 = 4; p.n2 = 2; p.d = 128; p.dv = 128;
//   p.block_size = 16; p.block_count = 4; p.scale = 0.088;
//   p.q = ...; p.k = ...; p.v = ...; p.topk = ...;
//   NsaRefForward fwd = NsaReferenceForward(p);
//   NsaRefBackward grad = NsaReferenceBackward(p, dy);
//
// Arrays are TND row-major: q [T1][N1][D], k [T2][N2][D], v [T2][N2][Dv],
// topk [T1][N2][K]. A query head whose selected keys are all masked gives
// out = 0, max = -FLT_MAX, sum = +FLT_MAX and no gradient. Pure and
// thread-safe; aborts with a message on inconsistent sizes or an index
// outside its batch (a test bug).
#ifndef ATTNSERVE_TESTS_TESTING_NSA_REFERENCE_H_
#define ATTNSERVE_TESTS_TESTING_NSA_REFERENCE_H_

#include <cstdint>
#include <vector>

namespace attnserve::test {

struct NsaRefProblem {
  std::vector<int64_t> seq_q;   // Query tokens of each batch.
  std::vector<int64_t> seq_kv;  // Key/value tokens of each batch.
  int64_t n1 = 1, n2 = 1, d = 1, dv = 1;
  int64_t block_size = 1, block_count = 1;
  bool causal = false;  // sparse_mode 2.
  double scale = 1.0;   // Pass the value the kernel uses (float32).
  std::vector<double> q, k, v;
  std::vector<int32_t> topk;

  int64_t t1() const;
  int64_t t2() const;
  int64_t g() const { return n1 / n2; }
};

struct NsaRefForward {
  std::vector<double> out;          // [T1][N1][Dv]
  std::vector<double> softmax_max;  // [T1][N1]
  std::vector<double> softmax_sum;  // [T1][N1]
  std::vector<bool> fully_masked;   // [T1][N1]: no selected key kept.
};

struct NsaRefBackward {
  std::vector<double> dq;  // [T1][N1][D]
  std::vector<double> dk;  // [T2][N2][D], scatter-added.
  std::vector<double> dv;  // [T2][N2][Dv]
  // [T2][N2]: no kept slot of any query reads this key, so its dk/dv rows
  // are exactly zero.
  std::vector<bool> unused_keys;
  // [T2][N2]: how many (token, query head, slot) triples read this key.
  std::vector<int64_t> key_uses;
};

NsaRefForward NsaReferenceForward(const NsaRefProblem& p);

// The exact gradient of sum(out * dy) with respect to q, k and v, with the
// probabilities recomputed in double. `dy` is [T1][N1][Dv].
NsaRefBackward NsaReferenceBackward(const NsaRefProblem& p,
                                    const std::vector<double>& dy);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_NSA_REFERENCE_H_
