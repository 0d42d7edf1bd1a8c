// Phase one of the two-phase API: validate arguments, resolve dimensions and
// size the workspace, without touching tensor data beyond what validation
// needs.
//
//   absl::StatusOr<ForwardPlan> plan = PlanForward(args);
//   if (!plan.ok()) return plan.status();   // INVALID_ARGUMENT / UNIMPLEMENTED
//   uint64_t bytes = plan->workspace_bytes;
//
// Plan functions are pure and thread-safe. Every CANN constraint is checked
// here and only here; an error's message names the field and the rule, and
// FieldOf(status) returns the field path.
#ifndef ATTNSERVE_CORE_PLAN_H_
#define ATTNSERVE_CORE_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/params.h"

namespace attnserve::core {

enum class Layout { kBSH, kSBH, kBSND, kBNSD, kTND };

// Parses "BSH" etc.; error names `input_layout`.
absl::StatusOr<Layout> ParseLayout(const std::string& name);
const char* LayoutName(Layout layout);

// Shape and dtype of one output.
struct OutputSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
};

// Dimensions resolved from the inputs, in CANN letters.
struct AttentionDims {
  Layout layout = Layout::kBSH;
  DType dtype = DType::kFloat32;  // q/k/v (and dy) dtype.
  int64_t b = 0;                  // Batch.
  int64_t n1 = 0;                 // Query heads (head_num).
  int64_t n2 = 0;                 // Key/value heads.
  int64_t g = 0;                  // n1 / n2.
  int64_t s1 = 0;                 // Query sequence length.
  int64_t s2 = 0;                 // Key/value sequence length.
  int64_t d = 0;                  // Query/key head dim.
  int64_t dv = 0;                 // Value head dim.
};

// Mask resolution for the skeleton: explicit tensor (with broadcast strides)
// and the top-left band of sparse_mode 0.
struct MaskSpec {
  bool has_tensor = false;
  // Element strides into atten_mask for (b, n1, i, j); 0 = broadcast.
  int64_t stride_b = 0, stride_n = 0, stride_i = 0, stride_j = 0;
  int64_t pre_tokens = kDefaultWindowTokens;
  int64_t next_tokens = kDefaultWindowTokens;
};

// Tile sizes the kernels use (rows of Q per tile, rows of K/V per tile).
struct Tiling {
  int64_t tile_q = 0;
  int64_t tile_kv = 0;
  int threads = 1;
};

struct ForwardPlan {
  AttentionDims dims;
  MaskSpec mask;
  Tiling tiling;
  float scale = 1.0f;
  uint64_t workspace_bytes = 0;     // For one run (all threads).
  double flops = 0;                 // 4 * B * N1 * S1 * S2 * D-ish (FA2).
  std::vector<OutputSpec> outputs;  // attention_out, softmax_max, softmax_sum.
};

struct BackwardPlan {
  AttentionDims dims;
  MaskSpec mask;
  Tiling tiling;
  float scale = 1.0f;
  // False when softmax_max/sum/attention_in must be recomputed.
  bool has_residuals = false;
  uint64_t workspace_bytes = 0;
  double flops = 0;                 // 2.5 x forward (FA2 convention).
  std::vector<OutputSpec> outputs;  // dq, dk, dv.
};

// Validates a forward request. `threads` is the intra-request parallelism the
// run will use (workspace is per thread).
absl::StatusOr<ForwardPlan> PlanForward(const ForwardArgs& args,
                                        int threads = 1);
absl::StatusOr<BackwardPlan> PlanBackward(const BackwardArgs& args,
                                          int threads = 1);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_PLAN_H_
