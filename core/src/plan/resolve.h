// The steps of PlanForward / PlanBackward, one per concern, each validating
// its part of the arguments (docs/semantics.md) and returning the resolved form
// the kernels read. Every failure is INVALID_ARGUMENT naming the wire field.
#ifndef ATTNSERVE_CORE_SRC_PLAN_RESOLVE_H_
#define ATTNSERVE_CORE_SRC_PLAN_RESOLVE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"

namespace attnserve::core {

// Documented ranges (docs/semantics.md, "Constraints").
inline constexpr int64_t kMaxBatch = 2 * 1024 * 1024;
inline constexpr int64_t kMaxBatchWithPrefix = 2048;
inline constexpr int64_t kMaxTndBatch = 2048;
inline constexpr int64_t kMaxTndBatchWithPrefix = 1024;
inline constexpr int64_t kMaxHeads = 256;
inline constexpr int64_t kMaxSeq = 1024 * 1024;
inline constexpr int64_t kMaxTokens = 1024 * 1024;
inline constexpr int64_t kMaxHeadDim = 512;
inline constexpr int64_t kMaxTndHeadDim = 768;
inline constexpr int64_t kSoftmaxLanes = 8;

// Which input dtypes a plan accepts.
enum class InputDTypes { kForward, kGradient };

// Layout, dtypes, shapes and head counts of q/k/v (and the TND token
// counts). `fp8` admits FLOAT8 query/key/value.
absl::StatusOr<AttentionDims> ResolveDims(const TensorView& q,
                                          const TensorView& k,
                                          const TensorView& v,
                                          const AttentionOptions& o,
                                          InputDTypes accepted);

// Per-batch rows: actual_seq_qlen/kvlen for TND, uniform otherwise. Fills
// dims->s1 / s2 with the longest batch for TND.
absl::StatusOr<std::vector<BatchSpan>> ResolveBatches(const AttentionOptions& o,
                                                      AttentionDims* dims);

// Scalar options: scale, keep_prob, pse_type, sparse_mode, inner_precise,
// start indices.
absl::Status CheckScalarOptions(const AttentionOptions& o);

// sparse_mode, pre/next_tokens, prefix and atten_mask.
absl::StatusOr<MaskSpec> ResolveMask(const AttentionOptions& o,
                                     const AttentionDims& dims,
                                     const std::vector<BatchSpan>& batches);

// pse / pse_type / q_start_idx / kv_start_idx. `scale` is the float scale.
absl::StatusOr<PseSpec> ResolvePse(const AttentionOptions& o,
                                   const AttentionDims& dims,
                                   const std::vector<BatchSpan>& batches,
                                   float scale);

// keep_prob, drop_mask, seed and offset.
absl::StatusOr<DropoutSpec> ResolveDropout(
    const AttentionOptions& o, const AttentionDims& dims,
    const std::vector<BatchSpan>& batches);

// Shape of q-like (rows = Sq / T1) or kv-like tensors of `dims`' layout.
std::vector<int64_t> QueryLikeShape(const AttentionDims& d, int64_t heads,
                                    int64_t dim);
std::vector<int64_t> KeyLikeShape(const AttentionDims& d, int64_t heads,
                                  int64_t dim);

// [B,N1,Sq,8] or, for TND, [T1,N1,8].
std::vector<int64_t> SoftmaxShape(const AttentionDims& d);

// "field.shape[axis]".
std::string DimField(const std::string& field, int axis);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_PLAN_RESOLVE_H_
