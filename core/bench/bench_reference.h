// References attnbench compares the kernels with, measured in the same run
// on the same number of threads:
//  - tile GEMM throughput: `threads` workers each running single-threaded
//    sgemm (OpenBLAS, and oneDNN's) on the kernels' tile shapes (the
//    ceiling of a tiled kernel), and oneDNN's bf16 matmul on the same
//    shapes (the ceiling of the bf16 tile path);
//  - eager attention: matmul -> softmax -> matmul over the whole [S, S]
//    score matrix with multithreaded OpenBLAS (what a framework's eager
//    mode does, in O(S^2) memory).
#ifndef ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_
#define ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_

#include <cstdint>
#include <string>

namespace attnserve::bench {

// How every figure is timed: wall clock (default) or the process's CPU
// time divided by the threads at work (steadier on a shared machine, where
// other processes take turns on the cores; exact for one thread).
void UseCpuClock(bool cpu_clock);
// Now() on the clock in use, and the seconds since such a value for work
// spread over `threads` threads.
double Now();
double SecondsSince(double start, int threads);

enum class SgemmLibrary { kOpenBlas, kOneDnn };
const char* SgemmLibraryName(SgemmLibrary library);

// GFLOP/s of `threads` concurrent single-threaded sgemm calls C = A·Bᵀ with
// A [m, k] and B [n, k]: the best of `windows` windows of `window_seconds`
// (best-of, like the kernels' figures; windows about as long as a kernel
// run, since the best of many short windows flatters a noisy machine).
double TileSgemmGflops(SgemmLibrary library, int64_t m, int64_t n, int64_t k,
                       int threads, double window_seconds, int windows);

// GFLOP/s of `threads` concurrent single-threaded oneDNN matmul primitives
// with bf16 operands and fp32 results, C = A·Bᵀ (`b_transposed`, the score
// product) or C += A·B (the output product), A [m, k]: the bf16 tile
// products' ceiling, measured like TileSgemmGflops. 0 when oneDNN cannot
// create the primitive on this host (`why_not` says why).
double TileBf16Gflops(int64_t m, int64_t n, int64_t k, bool b_transposed,
                      int threads, double window_seconds, int windows,
                      std::string* why_not);

// GFLOP/s of one oneDNN matmul of two n x n matrices (bf16 operands with
// fp32 results, or fp32) on an OpenMP team of `threads`, best of runs
// filling `seconds`: the whole-machine GEMM rate (the 2048^3 figure of the
// issue this reference was added for). 0 when the primitive cannot be
// created; `implementation` gets oneDNN's name for it.
double MatmulGflops(bool bf16, int64_t n, int threads, double seconds,
                    std::string* implementation);

// The oneDNN implementation a bf16 tile matmul gets on this host (e.g.
// "brg:avx512_core_amx_bf16"), or "" when it cannot be created.
std::string Bf16MatmulImplementation();

// Seconds of one eager fp32 attention forward (or forward + backward when
// `backward`) for B=1, `heads` heads of [s, d], with OpenBLAS on `threads`
// threads; best of `repeats`.
double EagerAttentionSeconds(int64_t heads, int64_t s, int64_t d, bool causal,
                             bool backward, int threads, int repeats);

}  // namespace attnserve::bench

#endif  // ATTNSERVE_CORE_BENCH_BENCH_REFERENCE_H_
