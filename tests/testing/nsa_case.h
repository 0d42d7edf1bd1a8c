// One randomized NSA selected-attention problem, as the kernel and the
// float64 reference see it.
//
// An NsaCase draws q, k, v, dy (rounded to the dtype) and topk_indices from
// a seed, packs them as TND tensors, and answers with core arguments and
// reference results:
//
//   NsaCaseConfig config;
//   config.dtype = core::DType::kBFloat16;
//   config.sparse_mode = 2;
//   config.pattern = NsaIndexPattern::kLocal;
//   NsaCase c(config);
//   absl::StatusOr<core::ForwardResult> fwd = RunNsaForward(c.forward_args());
//   ExpectNsaForwardMatches(c, *fwd, TolerancesFor(config.dtype));
//
// The case owns every tensor; the argument structs hold views into them,
// valid while the case lives. Const use is thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_NSA_CASE_H_
#define ATTNSERVE_TESTS_TESTING_NSA_CASE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/tensor.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/nsa_reference.h"

namespace attnserve::test {

// How topk_indices are drawn for each (token, kv head).
enum class NsaIndexPattern {
  // K distinct random blocks of the token's batch.
  kDistinct,
  // As kDistinct, then slot 1 repeats slot 0 and the last slot repeats
  // slot 1 (K >= 3): one block counted three times, in non-adjacent slots.
  kDuplicates,
  // Slot 0 is the block holding the query position (the last block when the
  // position is past the keys), the rest random distinct blocks; every fifth
  // token whose position leaves K blocks after its own takes those later
  // blocks only, which the causal rule masks entirely.
  kLocal,
  // Every token and head selects the same K blocks: every key of those
  // blocks is read by many tokens.
  kShared,
};
std::string NsaIndexPatternName(NsaIndexPattern pattern);

struct NsaCaseConfig {
  core::DType dtype = core::DType::kFloat32;
  // Per-batch lengths (the request carries their cumulative sums); a query
  // batch may be empty.
  std::vector<int64_t> seq_q = {70, 0, 130};
  std::vector<int64_t> seq_kv = {128, 64, 192};
  int64_t n1 = 4, n2 = 2, d = 128, dv = 128;
  int64_t block_size = 16, block_count = 4;
  int64_t sparse_mode = 0;
  // With sparse_mode 2: also send the standard [2048, 2048] causal mask.
  bool send_mask = false;
  NsaIndexPattern pattern = NsaIndexPattern::kDistinct;
  std::optional<double> scale;  // Unset: 1 / sqrt(D).
  double qk_range = 2.0;        // q, k uniform in [-qk_range, qk_range).
  double v_range = 1.0;         // v, dy uniform in [-v_range, v_range).
  uint64_t seed = 1;
};

// "BFLOAT16_n16x1_d192x128_mode2_Local"-style name.
std::string NsaCaseName(const NsaCaseConfig& config);

// Cumulative end offsets of per-batch lengths: {2, 0, 3} -> {2, 2, 5}.
std::vector<int64_t> Cumulative(const std::vector<int64_t>& lengths);

// An INT32 tensor of `shape` holding `values`.
core::HostTensor PackInt32(const std::vector<int32_t>& values,
                           std::vector<int64_t> shape);

// The standard compressed causal mask of sparse_mode 2: BOOL/UINT8
// [2048, 2048], 1 strictly above the diagonal.
core::HostTensor CausalMask2048(core::DType dtype = core::DType::kBool);

class NsaCase {
 public:
  explicit NsaCase(const NsaCaseConfig& config);
  NsaCase(const NsaCase&) = delete;
  NsaCase& operator=(const NsaCase&) = delete;

  const NsaCaseConfig& config() const { return config_; }
  const NsaRefProblem& problem() const { return problem_; }
  const std::vector<double>& dy() const { return dy_; }
  float scale() const { return scale_; }
  int64_t t1() const { return problem_.t1(); }
  int64_t t2() const { return problem_.t2(); }

  core::NsaOptions options() const;
  core::NsaForwardArgs forward_args() const;
  // Grad arguments with attention_out/softmax_max/softmax_sum viewing `fwd`
  // (keep it alive).
  core::NsaBackwardArgs backward_args(const core::ForwardResult& fwd) const;
  // Grad arguments with the residuals packed from the reference forward.
  core::NsaBackwardArgs backward_args_with_reference_residuals() const;

  const NsaRefForward& reference_forward() const { return ref_forward_; }
  const NsaRefBackward& reference_backward() const { return ref_backward_; }

 private:
  NsaCaseConfig config_;
  float scale_ = 1.0f;
  NsaRefProblem problem_;
  std::vector<double> dy_;
  core::HostTensor q_, k_, v_, dy_tensor_, topk_;
  std::optional<core::HostTensor> mask_;
  NsaRefForward ref_forward_;
  NsaRefBackward ref_backward_;
  core::HostTensor ref_max_, ref_sum_, ref_out_;
};

// Prepares the call for `threads` threads and runs it on a fresh engine with
// `threads` intra-op threads.
absl::StatusOr<core::ForwardResult> RunNsaForward(
    const core::NsaForwardArgs& args, int threads = 1);
absl::StatusOr<core::BackwardResult> RunNsaBackward(
    const core::NsaBackwardArgs& args, int threads = 1);

// attention_out and all 8 lanes of softmax_max/sum against the reference
// (fully masked rows exactly 0, -FLT_MAX, +FLT_MAX), with gtest EXPECTs.
void ExpectNsaForwardMatches(const NsaCase& c, const core::ForwardResult& got,
                             const Tolerances& tol);
// dq, dk, dv against the reference (unread keys and fully masked rows
// exactly 0), with gtest EXPECTs.
void ExpectNsaBackwardMatches(const NsaCase& c, const core::BackwardResult& got,
                              const Tolerances& tol);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_NSA_CASE_H_
