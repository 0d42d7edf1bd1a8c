// References attnbench compares the kernels with, measured in the same run
// on the same number of threads:
//  - tile GEMM throughput: `threads` workers each running single-threaded
//    sgemm (OpenBLAS, and oneDNN's) on the kernels' tile shapes (the
//    ceiling of a tiled kernel);
//  - eager attention: matmul -> softmax -> matmul over the whole [S, S]
//    score matrix with multithreaded OpenBLAS (what a framework's eager
//    mode does, in O(S^2) memory).
#ifndef ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_
#define ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_

#include <cstdint>

namespace attnserve::bench {

enum class SgemmLibrary { kOpenBlas, kOneDnn };
const char* SgemmLibraryName(SgemmLibrary library);

// GFLOP/s of `threads` concurrent single-threaded sgemm calls C = A·Bᵀ with
// A [m, k] and B [n, k]: the best of `windows` windows of `window_seconds`
// (best-of, like the kernels' figures; windows about as long as a kernel
// run, since the best of many short windows flatters a noisy machine).
double TileSgemmGflops(SgemmLibrary library, int64_t m, int64_t n, int64_t k,
                       int threads, double window_seconds, int windows);

// Seconds of one eager fp32 attention forward (or forward + backward when
// `backward`) for B=1, `heads` heads of [s, d], with OpenBLAS on `threads`
// threads; best of `repeats`.
double EagerAttentionSeconds(int64_t heads, int64_t s, int64_t d, bool causal,
                             bool backward, int threads, int repeats);

}  // namespace attnserve::bench

#endif  // ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_
