// One randomized attention problem, as the kernel and the reference see it.
//
// An AttentionCase draws q, k, v, dy (rounded to the dtype) and a mask from a
// seed, packs them in the requested layout, and answers with core arguments
// for the kernel and float64 reference results to compare against:
//
//   CaseConfig config;
//   config.layout = core::Layout::kBSH;
//   config.dtype = core::DType::kFloat16;
//   config.mask = MaskKind::kPerBatch;
//   AttentionCase c(config);
//   absl::StatusOr<core::ForwardResult> fwd = RunForward(c.forward_args());
//   ExpectForwardMatches(c, *fwd, TolerancesFor(config.dtype));
//
// The case owns every tensor; the argument structs it returns hold views into
// them, valid while the case lives. Not thread-safe to mutate; const use is.
#ifndef ATTNSERVE_TESTS_TESTING_ATTENTION_CASE_H_
#define ATTNSERVE_TESTS_TESTING_ATTENTION_CASE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/tensor.h"
#include "tests/testing/reference_attention.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {

// Which atten_mask the case sends (sparse_mode 0).
enum class MaskKind {
  kNone,      // No mask tensor (the band of pre/next_tokens still applies).
  kFull2D,    // [S1, S2]
  kShared,    // [1, 1, S1, S2]
  kPerBatch,  // [B, 1, S1, S2]
  kPerHead,   // [B, N1, S1, S2]
};
std::string MaskKindName(MaskKind kind);

struct CaseConfig {
  core::Layout layout = core::Layout::kBNSD;
  core::DType dtype = core::DType::kFloat32;
  // b, n1, n2, s1, s2, d, dv.
  RefDims dims{2, 4, 4, 37, 53, 40, 40};
  MaskKind mask = MaskKind::kNone;
  // BOOL or UINT8; unset: UINT8 for kFull2D/kPerHead, BOOL otherwise.
  std::optional<core::DType> mask_dtype;
  double masked_fraction = 0.3;     // Chance that a mask cell is 1 (masked).
  int fully_masked_rows = 3;        // Query rows all 1, per mask plane.
  int fully_masked_cols = 2;        // Key columns all 1, per mask plane.
  int64_t fully_masked_batch = -1;  // This batch entirely masked (B dim).
  int64_t pre_tokens = core::kDefaultWindowTokens;
  int64_t next_tokens = core::kDefaultWindowTokens;
  std::optional<double> scale;  // Unset: 1 / sqrt(D).
  double qk_range = 2.0;        // q, k uniform in [-qk_range, qk_range).
  double v_range = 1.0;         // v, dy uniform in [-v_range, v_range).
  uint64_t seed = 1;
};

// "BSH_FLOAT16_n6x2_PerBatch"-style name for parameterized tests.
std::string CaseName(const CaseConfig& config);

class AttentionCase {
 public:
  explicit AttentionCase(const CaseConfig& config);
  AttentionCase(const AttentionCase&) = delete;
  AttentionCase& operator=(const AttentionCase&) = delete;

  const CaseConfig& config() const { return config_; }
  const RefDims& dims() const { return problem_.dims; }
  const RefProblem& problem() const { return problem_; }
  const std::vector<double>& dy() const { return dy_; }
  float scale() const { return scale_; }

  // Canonical dims of q (and dq), k/v, out/dy.
  Bnsd q_dims() const;
  Bnsd k_dims() const;
  Bnsd v_dims() const;
  Bnsd out_dims() const;

  core::ForwardArgs forward_args() const;
  // Backward arguments; with `fwd`, softmax_max/sum and attention_in are
  // views into it (keep it alive), without they are left unset.
  core::BackwardArgs backward_args(const core::ForwardResult* fwd) const;
  // Backward arguments with residuals packed from the reference forward.
  core::BackwardArgs backward_args_with_reference_residuals() const;

  const RefForward& reference_forward() const { return ref_forward_; }
  const RefBackward& reference_backward() const { return ref_backward_; }

 private:
  core::AttentionOptions options() const;

  CaseConfig config_;
  float scale_ = 1.0f;
  RefProblem problem_;
  std::vector<double> dy_;
  core::HostTensor q_, k_, v_, dy_tensor_;
  std::optional<core::HostTensor> mask_;
  RefForward ref_forward_;
  RefBackward ref_backward_;
  // Reference residuals in kernel form (for backward_args_with_...).
  core::HostTensor ref_max_, ref_sum_, ref_out_;
};

// Relative tolerances (max|got - ref| / max|ref|) per output; see the
// derivation in attention_case.cc.
struct Tolerances {
  double out = 0;
  double softmax_max = 0;
  double softmax_sum = 0;
  double grad = 0;
};
Tolerances TolerancesFor(core::DType dtype);

// Prepares the call for `threads` threads and runs it on a fresh engine of
// `threads` intra-op threads.
absl::StatusOr<core::ForwardResult> RunForward(const core::ForwardArgs& args,
                                               int threads = 1);
absl::StatusOr<core::BackwardResult> RunBackward(const core::BackwardArgs& args,
                                                 int threads = 1);

// Checks attention_out and all 8 lanes of softmax_max/sum against the
// reference (fully masked rows exactly: 0, -FLT_MAX, +FLT_MAX) with gtest
// EXPECTs.
void ExpectForwardMatches(const AttentionCase& c,
                          const core::ForwardResult& got,
                          const Tolerances& tol);
// Checks dq, dk, dv against the reference with gtest EXPECTs.
void ExpectBackwardMatches(const AttentionCase& c,
                           const core::BackwardResult& got,
                           const Tolerances& tol);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_ATTENTION_CASE_H_
