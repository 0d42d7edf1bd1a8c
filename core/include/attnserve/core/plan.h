// Validation and planning of the FlashAttention operators: check the
// arguments, resolve dimensions and size the workspace, without touching
// tensor data beyond what validation needs.
//
//   absl::StatusOr<ForwardPlan> plan = PlanForward(args, /*threads=*/2);
//   if (!plan.ok()) return plan.status();   // INVALID_ARGUMENT / UNIMPLEMENTED
//   uint64_t bytes = plan->workspace_bytes;
//
// A plan describes a call; to run one, prepare it (prepared_call.h), which
// keeps the arguments and their plan together. Plan functions are pure and
// thread-safe. Every CANN constraint is checked here and only here; an
// error's message names the field and the rule, and FieldOf(status) returns
// the field path.
#ifndef ATTNSERVE_CORE_PLAN_H_
#define ATTNSERVE_CORE_PLAN_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/params.h"

namespace attnserve::core {

// How many threads a call is planned for. Workspace is per thread, so the
// count is fixed when the call is planned, from the call's cost: one thread
// per `flops_per_thread` FLOPs or per `bytes_per_thread` bytes its tensors
// hold (inputs and outputs, each read or written at least once), whichever
// asks for more, at least 1 and at most `max_threads` (flops_per_thread 0:
// always max_threads; bytes_per_thread 0: FLOPs only). Small calls then run
// on one thread and leave the others to large ones, and a call that moves
// much memory for few FLOPs (decoding, Sq >> Skv) gets the threads a
// single core's memory bandwidth cannot give it.
//
//   PlanForward(args, 4);                            // 4 threads.
//   PlanForward(args, ThreadPolicy(8, 2.5e8));       // 1 to 8, by FLOPs.
//   PlanForward(args, ThreadPolicy(8, 2.5e8, 32e6)); // ... or by bytes.
struct ThreadPolicy {
  // Exactly `threads` threads (at least 1). Implicit: a count is a policy.
  ThreadPolicy(int threads = 1) : max_threads(threads) {}  // NOLINT
  ThreadPolicy(int most, double flops_each, double bytes_each = 0)
      : max_threads(most),
        flops_per_thread(flops_each),
        bytes_per_thread(bytes_each) {}

  // Threads for a call of `flops` FLOPs whose tensors hold `bytes` bytes.
  int ThreadsFor(double flops, double bytes = 0) const {
    const int most = std::max(1, max_threads);
    if (!(flops_per_thread > 0)) return most;
    double wanted = std::ceil(flops / flops_per_thread);
    if (bytes_per_thread > 0) {
      wanted = std::max(wanted, std::ceil(bytes / bytes_per_thread));
    }
    return wanted >= most ? most : std::max(1, static_cast<int>(wanted));
  }

  int max_threads = 1;
  double flops_per_thread = 0;
  double bytes_per_thread = 0;
};

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
  int64_t s1 = 0;                 // Query sequence length (TND: the longest).
  int64_t s2 = 0;                 // Key/value sequence length (TND: longest).
  int64_t d = 0;                  // Query/key head dim.
  int64_t dv = 0;                 // Value head dim.
  int64_t t1 = 0;                 // TND: query tokens (0 otherwise).
  int64_t t2 = 0;                 // TND: key/value tokens (0 otherwise).
};

// One batch's rows: query rows [q_start, q_start + s1) of the token axis
// (TND; 0 for padded layouts) and key/value rows [kv_start, kv_start + s2).
struct BatchSpan {
  int64_t q_start = 0;
  int64_t s1 = 0;
  int64_t kv_start = 0;
  int64_t s2 = 0;
};

// Per-batch form of the keep predicate (docs/semantics.md, "Masks and
// sparse modes"): cell (i, j),
// batch-local, is kept when
//   (lo <= j - i <= hi  ||  j < prefix)  &&  !atten_mask(i, j).
struct BatchBand {
  static constexpr int64_t kUnbounded = int64_t{1} << 60;
  int64_t lo = -kUnbounded;
  int64_t hi = kUnbounded;
  int64_t prefix = 0;     // Keys j < prefix are kept whatever the band.
  int64_t mask_base = 0;  // Element of atten_mask at (b, n=0, i=0, j=0).
};

// The resolved mask of a request: the sparse mode's band per batch and, for
// modes that read one (0, 1, 5), the explicit atten_mask's addressing.
// Compressed masks of the other modes are validated and never read.
struct MaskSpec {
  int64_t sparse_mode = 0;
  bool has_tensor = false;  // The kernels read atten_mask (1 = masked).
  // Element strides into atten_mask for (n1, i, j); batch via mask_base.
  int64_t stride_n = 0, stride_i = 0, stride_j = 0;
  std::vector<BatchBand> bands;  // One per batch.
};

// Position bias (docs/semantics.md, "pse"): s = scale * q.k + coeff * bias(i,
// j).
struct PseSpec {
  enum class Kind { kNone, kExternal, kAlibi, kAlibiSqrt };
  enum class Rows { kFull, kBroadcast, kCompressed };
  Kind kind = Kind::kNone;
  int64_t pse_type = 1;
  float coeff = 1.0f;  // scale for pse_type 1, 1 otherwise.
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // The pse tensor's shape (dpse has it too).
  // External: element (b, n, row, j) at b*stride_b + n*stride_n +
  // row*stride_row + j, rows resolved per `rows` (compressed: 1024 rows).
  Rows rows = Rows::kFull;
  int64_t stride_b = 0, stride_n = 0, stride_row = 0;
  // Generated ALiBi: slope (b, n) at b*stride_b + n; relative position
  // rel = (j + kv_start) - (i + q_start).
  int64_t q_start = 0, kv_start = 0;
};

// Dropout (docs/semantics.md, "Dropout"): keep bits from drop_mask or from
// Philox.
struct DropoutSpec {
  enum class Kind { kNone, kMask, kSeed };
  Kind kind = Kind::kNone;
  float keep_prob = 1.0f;
  uint64_t seed = 0, offset = 0;
  std::vector<int64_t> bit_base;  // Per batch: bit index of (b, 0, 0, 0).
};

// How the kernels multiply tiles. kFloat32: fp32 operands (FLOAT16 and
// BFLOAT16 inputs widened). kBFloat16: BFLOAT16 operands with fp32
// accumulation, K and V held in bf16, P and dS rounded to bf16 for their
// products (softmax, statistics and accumulators stay fp32); chosen for
// BFLOAT16 requests on hosts whose CPU multiplies bf16 natively (AVX-512
// BF16, AMX), unless planning was told not to.
enum class TileProducts { kFloat32, kBFloat16 };
const char* TileProductsName(TileProducts products);

// The products a request of `dtype` runs with: kBFloat16 for BFLOAT16 when
// `allow_bf16` and the host has native bf16 products, kFloat32 otherwise.
TileProducts ChooseTileProducts(DType dtype, bool allow_bf16);

// Tile sizes the kernels use (rows of Q per tile, rows of K/V per tile).
struct Tiling {
  int64_t tile_q = 0;
  int64_t tile_kv = 0;
  int threads = 1;
  TileProducts products = TileProducts::kFloat32;
};

struct ForwardPlan {
  AttentionDims dims;
  std::vector<BatchSpan> batches;
  MaskSpec mask;
  PseSpec pse;
  DropoutSpec dropout;
  Tiling tiling;
  float scale = 1.0f;
  uint64_t workspace_bytes = 0;     // For one run (all threads).
  double flops = 0;                 // 4 * B * N1 * S1 * S2 * D-ish (FA2).
  std::vector<OutputSpec> outputs;  // attention_out, softmax_max, softmax_sum.
};

struct BackwardPlan {
  AttentionDims dims;
  std::vector<BatchSpan> batches;
  MaskSpec mask;
  PseSpec pse;
  DropoutSpec dropout;
  Tiling tiling;
  float scale = 1.0f;
  // False when softmax_max/sum/attention_in must be recomputed: the run
  // then runs `recompute` (on the same threads) first.
  bool has_residuals = false;
  std::optional<ForwardPlan> recompute;
  uint64_t workspace_bytes = 0;
  double flops = 0;  // 2.5 x forward (FA2 convention), recompute excluded.
  std::vector<OutputSpec> outputs;  // dq, dk, dv (and dpse with a pse).
};

// Validates a forward request and plans it for the threads `threads` grants
// it (the intra-request parallelism of the run; workspace is per thread).
// `allow_bf16` lets a BFLOAT16 request run bf16 tile products where the host
// has them (see TileProducts; Engine::bf16_tile_products() is what an engine
// was configured with); the workspace is sized for the products chosen.
absl::StatusOr<ForwardPlan> PlanForward(const ForwardArgs& args,
                                        const ThreadPolicy& threads = {},
                                        bool allow_bf16 = true);
// The same for the grad. Without residuals the threads follow the FLOPs of
// the grad and its recomputed forward together, and the plan holds the
// forward's plan (`recompute`, with the same products).
absl::StatusOr<BackwardPlan> PlanBackward(const BackwardArgs& args,
                                          const ThreadPolicy& threads = {},
                                          bool allow_bf16 = true);

// The forward a backward without residuals runs to recompute them: as
// PlanForward, but FLOAT8 inputs are accepted (attention_out is FLOAT32).
absl::StatusOr<ForwardPlan> PlanRecomputeForward(
    const ForwardArgs& args, const ThreadPolicy& threads = {},
    bool allow_bf16 = true);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_PLAN_H_
