// Tile products with bf16 operands and fp32 results (fp32 accumulation),
// through oneDNN matmul primitives: the kernels' bf16 path, beside the fp32
// `sgemm` calls of gemm.h.
//
//   if (Bf16Products().available) {
//     Bf16Gemm({.m = 128, .n = 128, .k = 128, .lda = 128, .ldb = 128,
//               .ldc = 128, .b_transposed = true}, q, k, s);   // S = Q·Kᵀ
//   }
//
// Whether the host has them is decided once, at first use: oneDNN must be
// able to create a bf16 x bf16 -> f32 matmul and run it with native bf16
// dot products (AVX-512 BF16 or AMX; oneDNN's effective ISA, which
// ONEDNN_MAX_CPU_ISA can lower). Emulated bf16 (oneDNN's avx512_core
// "gemm:jit") is slower than the fp32 path and counts as "not available".
//
// Primitives are cached per shape and per thread (the JIT code itself is
// shared through oneDNN's primitive cache), so callers should keep the set
// of shapes small: the kernels round tile edges up to kBf16Granule and
// zero-pad (few query rows excepted: RoundUpProductRows). Each call is
// single-threaded on the calling thread.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_BF16_GEMM_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_BF16_GEMM_H_

#include <cstdint>
#include <string>

namespace attnserve::core {

// What the host offers for bf16 tile products (probed once, thread-safe).
struct Bf16ProductSupport {
  bool available = false;
  // oneDNN's implementation, e.g. "brg:avx512_core_amx_bf16", when
  // available; otherwise why not (for logs and test skips).
  std::string detail;
};
const Bf16ProductSupport& Bf16Products();

// Tile edges the kernels round their bf16 products up to (rows of A and B,
// and the contraction), so that a run needs a few dozen primitives at most
// whatever its sequence lengths.
inline constexpr int64_t kBf16Granule = 32;
inline int64_t RoundUpToGranule(int64_t n) {
  return (n + kBf16Granule - 1) / kBf16Granule * kBf16Granule;
}

// The rows of A of a product whose rows are not contracted (the query
// rows of the score and output products): fewer than a granule are not
// padded, so that decoding's few query rows (one per head, or a group's
// heads stacked) do not pay for a whole granule of products (a 4-row tile
// ran 8 times the arithmetic it needed, and decoding was bound by it);
// from a granule on, as RoundUpToGranule. Never more than RoundUpToGranule,
// so buffers padded for that hold these rows too. At most kBf16Granule - 1
// shapes more per product.
inline int64_t RoundUpProductRows(int64_t rows) {
  return rows < kBf16Granule ? rows : RoundUpToGranule(rows);
}

// C[m,n] = A·B (+ C when `accumulate`), row-major with leading dimensions
// in elements. A is [m,k] or, `a_transposed`, given as [k,m] (Aᵀ stored);
// B is [k,n] or, `b_transposed`, given as [n,k] (A·Bᵀ).
struct Bf16GemmShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  bool a_transposed = false;
  bool b_transposed = false;
  bool accumulate = false;
};

// Runs the product on the calling thread. Requires Bf16Products().available.
// A shape oneDNN cannot make a bf16 primitive for (none known) runs as
// Bf16GemmWidened.
void Bf16Gemm(const Bf16GemmShape& shape, const uint16_t* a, const uint16_t* b,
              float* c);

// The same product as fp32 sgemm on widened copies of the operands (exact
// products, fp32 sums); any host. The fallback of Bf16Gemm.
void Bf16GemmWidened(const Bf16GemmShape& shape, const uint16_t* a,
                     const uint16_t* b, float* c);

// "onednn-bf16-matmul:<implementation>" or "onednn-bf16-matmul:off (<why>)",
// for the engine's backend list.
std::string Bf16ProductsDescription();

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_BF16_GEMM_H_
