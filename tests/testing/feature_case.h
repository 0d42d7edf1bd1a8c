// One randomized request using any FlashAttentionScore/Grad feature, as the
// kernel and the float64 reference see it: padded layouts and TND varlen,
// FLOAT32/FLOAT16/BFLOAT16 (and FLOAT8 grad inputs), GQA, D != Dv, sparse
// modes 0-8 with pre/next/prefix and every mask form, pse of every type and
// shape, dropout from a drop_mask or a seed, with or without residuals.
//
//   FeatureConfig config;
//   config.layout = core::Layout::kTND;
//   config.seq_q = {5, 0, 17};
//   config.seq_kv = {9, 4, 0};
//   config.sparse_mode = 3;
//   FeatureCase c(config);
//   absl::StatusOr<core::ForwardResult> fwd = RunForward(c.forward_args());
//   ExpectForwardMatches(c, *fwd, FeatureTolerances(config));
//
// Everything the expectation depends on is derived on the test side from the
// conventions: the keep predicate (sparse_predicate.h), the pse bias and the
// dpse reduction (pse_reference.h), the Philox keep bits (philox.h) and the
// FLOAT8 encoding (float8.h). The reference runs once per batch (B
// independent problems of their own lengths); a batch with Sq_b > 0 and
// Skv_b == 0 expects out 0, softmax_max 0, softmax_sum 0 and zero gradients.
//
// Outputs are compared in "tensor order": canonical [B][N][S][D] for the
// padded layouts, token-major [T][N][D] for TND (rows [B][N1][S1] resp.
// [T1][N1] for the softmax statistics). The case owns every tensor; the
// argument structs it returns hold views into them, valid while it lives.
// Const use is thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_FEATURE_CASE_H_
#define ATTNSERVE_TESTS_TESTING_FEATURE_CASE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attnserve/core/engine.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/pse_reference.h"
#include "tests/testing/reference_attention.h"
#include "tests/testing/sparse_predicate.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {

// Which atten_mask tensor the request carries.
enum class MaskForm {
  kNone,
  kFull2D,      // [Sq, Skv]
  kShared,      // [1, 1, Sq, Skv]
  kPerBatch,    // [B, 1, Sq, Skv]
  kPerHead,     // [B, N1, Sq, Skv]
  kCompressed,  // Standard [2048, 2048] ([3072, 2048] for mode 6).
  kTndMax,      // TND [maxSq, maxSkv]: batch b reads its top-left block.
  kTndPacked,   // TND [T1, T2]: batch b at (cu_q[b] + i, cu_kv[b] + j).
};
std::string MaskFormName(MaskForm form);

// The standard contents of a compressed mask: [2048, 2048] triu(ones, 1);
// with `prefix_form`, that on top of [zeros(1024,1024) | ones(1024,1024)].
std::vector<uint8_t> StandardCompressedMask(bool prefix_form);

enum class DropoutKind {
  kNone,
  kMask,  // A random drop_mask.
  kSeed,  // seed (and offset): the Philox-generated mask.
};

enum class DropMaskShape {
  kFlat,      // [bytes]
  kPadded4D,  // [B, N1, Sq, ceil(Skv / 8)] (padded layouts).
};

struct FeatureConfig {
  core::Layout layout = core::Layout::kBNSD;
  // FLOAT32, FLOAT16, BFLOAT16; FLOAT8_E4M3FN / E5M2 for the grad only.
  core::DType dtype = core::DType::kFloat32;
  int64_t n1 = 4;
  int64_t n2 = 2;
  int64_t d = 40;
  int64_t dv = 40;
  // Padded layouts: b batches of s1 queries and s2 keys.
  int64_t b = 2;
  int64_t s1 = 37;
  int64_t s2 = 53;
  // TND: the lengths of each batch (B = size; zeros allowed).
  std::vector<int64_t> seq_q;
  std::vector<int64_t> seq_kv;

  int64_t sparse_mode = 0;
  int64_t pre_tokens = core::kDefaultWindowTokens;
  int64_t next_tokens = core::kDefaultWindowTokens;
  std::vector<int64_t> prefix;  // Modes 5 and 6.
  MaskForm mask = MaskForm::kNone;
  core::DType mask_dtype = core::DType::kUInt8;  // BOOL or UINT8.
  double masked_fraction = 0.2;  // Chance that a full-mask cell is 1.
  int fully_masked_rows = 1;     // Rows set all 1, per full-mask plane.

  PseForm pse = PseForm::kNone;
  int64_t pse_type = 1;
  // External pse dtype; unset: the query dtype (FLOAT16 for FLOAT8 inputs).
  std::optional<core::DType> pse_dtype;
  std::vector<int64_t> q_start_idx;
  std::vector<int64_t> kv_start_idx;
  double pse_range = 1.0;  // External pse uniform in [-range, range).

  DropoutKind dropout = DropoutKind::kNone;
  double keep_prob = 1.0;
  // Fraction of 1 bits of a random drop_mask when keep_prob == 1.
  double drop_mask_keep_fraction = 0.8;
  DropMaskShape drop_mask_shape = DropMaskShape::kFlat;
  int64_t drop_mask_extra_bytes = 3;  // Random bytes beyond the last bit.
  uint64_t dropout_seed = 0;
  std::optional<uint64_t> dropout_offset;

  std::optional<double> scale;  // Unset: 1 / sqrt(D).
  double qk_range = 2.0;        // q, k uniform in [-qk_range, qk_range).
  double v_range = 1.0;         // v, dy uniform in [-v_range, v_range).
  uint64_t seed = 1;
};

// "TND_FLOAT16_n4x2_mode3_MaskNone_NoPse_NoDrop"-style name.
std::string FeatureCaseName(const FeatureConfig& config);

// Tolerances for `config`: TolerancesFor(dtype), and the FLOAT32 ones for
// FLOAT8 inputs (decoded exactly, computed in fp32, FLOAT32 outputs).
Tolerances FeatureTolerances(const FeatureConfig& config);

// Where the backward's softmax_max/sum and attention_in come from.
enum class Residuals {
  kKernelForward,  // The kernel's own forward outputs.
  kReference,      // The reference's, packed (attention_in in the dtype).
  kRecomputed,     // Not sent.
};

// Expected outputs in tensor order (see the file comment).
struct FeatureExpectation {
  std::vector<double> out;       // [rows][Dv]
  std::vector<bool> out_zero;    // Rows that must be exactly 0.
  std::vector<double> stat_max;  // [rows]
  std::vector<double> stat_sum;  // [rows]
  std::vector<bool> stat_exact;  // Rows whose max/sum must be exact.
  std::vector<double> dq;        // [rows][D]
  std::vector<bool> dq_zero;     // [rows]
  std::vector<double> dk;        // [kv rows][D]
  std::vector<double> dv;        // [kv rows][Dv]
  std::vector<bool> kv_zero;     // [kv rows]
  std::optional<DpseSums> dpse;  // When a pse is sent.
};

class FeatureCase {
 public:
  explicit FeatureCase(const FeatureConfig& config);
  FeatureCase(const FeatureCase&) = delete;
  FeatureCase& operator=(const FeatureCase&) = delete;

  const FeatureConfig& config() const { return config_; }
  bool tnd() const { return config_.layout == core::Layout::kTND; }
  int64_t batches() const { return static_cast<int64_t>(sq_.size()); }
  int64_t sq(int64_t b) const { return sq_[static_cast<size_t>(b)]; }
  int64_t skv(int64_t b) const { return skv_[static_cast<size_t>(b)]; }
  // First token of batch b (TND) or b * S (padded).
  int64_t q_start(int64_t b) const { return cu_q_[static_cast<size_t>(b)]; }
  int64_t kv_start(int64_t b) const { return cu_kv_[static_cast<size_t>(b)]; }
  int64_t t1() const { return cu_q_.back(); }
  int64_t t2() const { return cu_kv_.back(); }
  float scale() const { return scale_; }
  // float32(keep_prob), as the kernel uses it.
  float keep_prob() const { return keep_prob_; }

  // keep(i, j) of batch b, query head n: the sparse-mode predicate and,
  // for modes 0, 1 and 5, the mask tensor.
  bool Keep(int64_t b, int64_t n, int64_t i, int64_t j) const;
  // True when a dropout mask applies (a drop_mask, or a seed with
  // keep_prob < 1).
  bool has_dropout() const { return !drop_keep_.empty(); }
  // Bit index of cell (b, n, i, j) in the dropout mask.
  uint64_t DropBit(int64_t b, int64_t n, int64_t i, int64_t j) const;
  uint64_t total_drop_bits() const;
  // The dropout keep bit of cell (b, n, i, j) (true without dropout).
  bool DropKeep(int64_t b, int64_t n, int64_t i, int64_t j) const;
  // The dropout keep bits packed as a drop_mask (LSB first, 1 = keep).
  std::string DropKeepBytes() const;

  const SparseSpec& sparse() const { return sparse_; }
  const PseSpec& pse() const { return pse_; }

  // The float64 problem of batch b (batch index 0 inside; lengths Sq_b,
  // Skv_b > 0) with keep, bias and dropout; its functions refer to this
  // case. record_ds is set when a pse is sent.
  RefProblem BatchProblem(int64_t b) const;
  const std::vector<double>& batch_dy(int64_t b) const {
    return dy_[static_cast<size_t>(b)];
  }

  // Padded layouts: the canonical [B][N][S][D] arrays of q, k, v, dy and
  // their dims.
  std::vector<double> canonical_q() const { return Concat(q_); }
  std::vector<double> canonical_k() const { return Concat(k_); }
  std::vector<double> canonical_v() const { return Concat(v_); }
  std::vector<double> canonical_dy() const { return Concat(dy_); }
  Bnsd q_dims() const {
    return Bnsd{batches(), config_.n1, config_.s1, config_.d};
  }
  Bnsd k_dims() const {
    return Bnsd{batches(), config_.n2, config_.s2, config_.d};
  }
  Bnsd v_dims() const {
    return Bnsd{batches(), config_.n2, config_.s2, config_.dv};
  }
  Bnsd out_dims() const {
    return Bnsd{batches(), config_.n1, config_.s1, config_.dv};
  }

  // Packs per-batch [N][S_b][dim] arrays into a tensor of the case's layout.
  core::HostTensor PackTensor(const std::vector<std::vector<double>>& batches,
                              int64_t heads, int64_t dim, bool query_side,
                              core::DType dtype) const;
  // Unpacks a tensor of the case's layout into tensor order.
  absl::StatusOr<std::vector<double>> UnpackTensor(
      const core::HostTensor& tensor, int64_t heads, int64_t dim,
      bool query_side, core::DType dtype) const;
  // The shape of a q-like (query_side) or k-like tensor.
  std::vector<int64_t> TensorShape(int64_t heads, int64_t dim,
                                   bool query_side) const;
  // The softmax_max/sum shape: [B, N1, S1, 8] or [T1, N1, 8].
  std::vector<int64_t> StatShape() const;

  core::ForwardArgs forward_args() const;
  // Backward arguments; with `fwd`, softmax_max/sum and attention_in are
  // views into it (keep it alive), without they are left unset.
  core::BackwardArgs backward_args(const core::ForwardResult* fwd) const;
  // Backward arguments with residuals packed from the reference forward
  // (attention_in rounded to the input dtype).
  core::BackwardArgs backward_args_with_reference_residuals() const;
  core::BackwardArgs backward_args_for(Residuals residuals,
                                       const core::ForwardResult* fwd) const;

  const FeatureExpectation& expected() const { return expected_; }
  // The backward expectation when D_i is computed from the reference
  // residuals' (rounded) attention_in.
  FeatureExpectation ExpectedWithReferenceResiduals() const;

  const core::HostTensor* pse_tensor() const {
    return pse_tensor_ ? &*pse_tensor_ : nullptr;
  }
  const core::HostTensor* mask_tensor() const {
    return mask_tensor_ ? &*mask_tensor_ : nullptr;
  }

 private:
  core::AttentionOptions options() const;
  bool MaskedAt(int64_t b, int64_t n, int64_t i, int64_t j) const;
  size_t MaskIndex(int64_t b, int64_t n, int64_t i, int64_t j) const;
  void MakeMask();
  void MakeDropout();
  void MakePse();
  // Row of (b, n, i) in tensor order, and of key (b, n2, j).
  size_t QRow(int64_t b, int64_t n, int64_t i) const;
  size_t KvRow(int64_t b, int64_t n2, int64_t j) const;
  std::vector<double> Concat(const std::vector<std::vector<double>>& v) const;
  // Fills `e` from the reference; `attention_in` (per batch, may be null)
  // replaces the output in D_i.
  void Expect(const std::vector<std::vector<double>>* attention_in,
              FeatureExpectation* e) const;

  FeatureConfig config_;
  float scale_ = 1.0f;
  float keep_prob_ = 1.0f;
  std::vector<int64_t> sq_, skv_;
  std::vector<int64_t> cu_q_, cu_kv_;  // B + 1 entries, starting at 0.
  SparseSpec sparse_;
  PseSpec pse_;
  // Per batch: [N1][Sq_b][D], [N2][Skv_b][D], [N2][Skv_b][Dv], [N1][Sq_b][Dv].
  std::vector<std::vector<double>> q_, k_, v_, dy_;
  core::HostTensor q_tensor_, k_tensor_, v_tensor_, dy_tensor_;
  std::vector<uint8_t> mask_values_;
  std::vector<int64_t> mask_shape_;
  std::optional<core::HostTensor> mask_tensor_;
  std::optional<core::HostTensor> pse_tensor_;
  std::optional<core::HostTensor> drop_mask_tensor_;
  std::vector<bool> drop_keep_;  // Per bit; empty without dropout.
  // Reference forward per batch (empty for Sq_b == 0 or Skv_b == 0).
  std::vector<RefForward> ref_forward_;
  core::HostTensor ref_max_, ref_sum_, ref_out_;
  std::vector<std::vector<double>> ref_out_rounded_;  // Per batch.
  FeatureExpectation expected_;
};

// Checks attention_out and all 8 lanes of softmax_max/sum.
void ExpectForwardMatches(const FeatureCase& c, const core::ForwardResult& got,
                          const Tolerances& tol);
// Checks dq, dk, dv and dpse (present iff a pse was sent) against the
// expectation for `residuals`.
void ExpectBackwardMatches(const FeatureCase& c,
                           const core::BackwardResult& got,
                           const Tolerances& tol, Residuals residuals);
// Checks dpse against `expected.dpse`: elements no kept cell reads exactly 0,
// others within tol of the largest Σ|share| (the error scale of the sums).
::testing::AssertionResult DpseMatches(
    const FeatureCase& c, const std::optional<core::HostTensor>& got,
    const FeatureExpectation& expected, double tol);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_FEATURE_CASE_H_
