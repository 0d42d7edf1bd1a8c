// A plain float64 reference of FlashAttentionScore and its gradient.
//
// No tiling and no online softmax: every row is computed in one pass over all
// keys, in double, straight from the formulas of the semantics digest (§2, §5
// and §6). Tensors are canonical row-major [B][N][S][D] double arrays whatever
// the layout the kernel sees; tests pack and unpack them with tensors.h.
// Variable-length (TND) requests are B independent problems with B = 1 each.
//
// Besides the keep predicate (masks, sparse modes) a problem may carry an
// additive score bias (s = scale * qk + bias, the test side derives it from
// pse / pse_type / slopes) and a dropout predicate with its keep_prob; the
// backward can then record the full dS, the gradient with respect to that
// bias, from which tests reduce dpse themselves.
//
//   RefProblem p;
//   p.dims = RefDims{/*b=*/1, /*n1=*/2, /*n2=*/1, /*s1=*/5, /*s2=*/7,
//                    /*d=*/4, /*dv=*/4};
//   p.q = ...; p.k = ...; p.v = ...; p.scale = 0.5;
//   p.keep = MakeKeepFn(p.dims, mask);       // optional
//   RefForward fwd = ReferenceForward(p);
//   RefBackward grad = ReferenceBackward(p, dy);
//
// Fully masked rows (no key kept) give out = 0, max = -FLT_MAX,
// sum = +FLT_MAX and no gradient contribution. All functions are pure and
// thread-safe; they abort with a message on inconsistent sizes (a test bug).
#ifndef ATTNSERVE_TESTS_TESTING_REFERENCE_ATTENTION_H_
#define ATTNSERVE_TESTS_TESTING_REFERENCE_ATTENTION_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "attnserve/core/params.h"

namespace attnserve::test {

// Dimensions in CANN letters. Query head n uses key/value head n / (n1 / n2).
struct RefDims {
  int64_t b = 1;   // Batch.
  int64_t n1 = 1;  // Query heads.
  int64_t n2 = 1;  // Key/value heads; must divide n1.
  int64_t s1 = 1;  // Query length.
  int64_t s2 = 1;  // Key/value length.
  int64_t d = 1;   // Query/key head dim.
  int64_t dv = 1;  // Value head dim.

  int64_t g() const { return n1 / n2; }
  size_t q_size() const { return static_cast<size_t>(b * n1 * s1 * d); }
  size_t k_size() const { return static_cast<size_t>(b * n2 * s2 * d); }
  size_t v_size() const { return static_cast<size_t>(b * n2 * s2 * dv); }
  // Size of out and dy: [B][N1][S1][Dv].
  size_t out_size() const { return static_cast<size_t>(b * n1 * s1 * dv); }
  // Number of query rows: [B][N1][S1].
  size_t rows() const { return static_cast<size_t>(b * n1 * s1); }
};

// True when query row i of (batch b, query head n) attends key j.
using KeepFn = std::function<bool(int64_t b, int64_t n, int64_t i, int64_t j)>;

// The additive bias of score (b, n, i, j). Called only for kept cells.
using BiasFn =
    std::function<double(int64_t b, int64_t n, int64_t i, int64_t j)>;

// The mask of sparse_mode 0: an optional mask tensor (1 = masked) of shape
// [S1,S2], [1,1,S1,S2], [B,1,S1,S2] or [B,N1,S1,S2], and the top-left band
// i - pre_tokens <= j <= i + next_tokens.
struct RefMask {
  std::vector<uint8_t> values;  // Empty: no mask tensor.
  std::vector<int64_t> shape;
  int64_t pre_tokens = core::kDefaultWindowTokens;
  int64_t next_tokens = core::kDefaultWindowTokens;
};

// The keep predicate of `mask` for `dims`. Aborts if the mask's shape is not
// one of the four accepted forms. The returned function copies the mask.
KeepFn MakeKeepFn(const RefDims& dims, const RefMask& mask);

struct RefProblem {
  RefDims dims;
  std::vector<double> q;  // [B][N1][S1][D]
  std::vector<double> k;  // [B][N2][S2][D]
  std::vector<double> v;  // [B][N2][S2][Dv]
  double scale = 1.0;     // Pass the value the kernel uses (float32).
  KeepFn keep;            // Empty: every key is kept.
  BiasFn bias;            // Empty: no bias. s = scale * qk + bias.
  // Dropout: true = the cell survives. Empty: no dropout. When set, the
  // forward uses P' = P * keep / keep_prob (also with keep_prob == 1).
  KeepFn dropout;
  double keep_prob = 1.0;  // Pass the value the kernel uses (float32).
  // ReferenceBackward fills RefBackward::ds ([B][N1][S1][S2] doubles).
  bool record_ds = false;
};

struct RefForward {
  std::vector<double> out;          // [B][N1][S1][Dv]
  std::vector<double> softmax_max;  // [B][N1][S1]
  std::vector<double> softmax_sum;  // [B][N1][S1]
  std::vector<bool> fully_masked;   // [B][N1][S1]: no key kept.
};

struct RefBackward {
  std::vector<double> dq;  // [B][N1][S1][D]
  std::vector<double> dk;  // [B][N2][S2][D], summed over each head group.
  std::vector<double> dv;  // [B][N2][S2][Dv], summed over each head group.
  // [B][N2][S2]: no query of any head of the group keeps this key, so its
  // dk and dv rows are exactly zero.
  std::vector<bool> unused_keys;
  // dS = P * (dP - D) per cell ([B][N1][S1][S2], 0 where masked): the
  // gradient of sum(out * dy) with respect to the additive score bias. Only
  // when RefProblem::record_ds is set; empty otherwise.
  std::vector<double> ds;
};

// attention_out, softmax_max and softmax_sum of `p`.
RefForward ReferenceForward(const RefProblem& p);

// The exact gradient of sum(out * dy) with respect to q, k and v, with the
// probabilities recomputed in double (no residuals from a forward are used).
// `dy` is [B][N1][S1][Dv]. With dropout, dP = (dy . v) * keep / keep_prob,
// dv sums P' * dy and dS uses the undropped P (semantics §6).
RefBackward ReferenceBackward(const RefProblem& p,
                              const std::vector<double>& dy);

// As above, but D_i = dy_i . attention_in_i with the given `attention_in`
// ([B][N1][S1][Dv]) in place of the reference's own output, as the kernel
// does with a sent (rounded) attention_in.
RefBackward ReferenceBackward(const RefProblem& p,
                              const std::vector<double>& dy,
                              const std::vector<double>& attention_in);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_REFERENCE_ATTENTION_H_
