// The only matrix-product call sites of the core: row-major fp32 GEMMs on
// small tiles, each single-threaded (parallelism is the caller's).
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_GEMM_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_GEMM_H_

#include <cstdint>
#include <string>

namespace attnserve::core {

// C[m,n] = alpha * A[m,k] * B[n,k]^T + beta * C   (A·Bᵀ: scores = Q·Kᵀ).
void GemmNT(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc);

// C[m,n] = alpha * A[m,k] * B[k,n] + beta * C   (A·B: out = P·V).
void GemmNN(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc);

// C[m,n] = alpha * A[k,m]^T * B[k,n] + beta * C   (Aᵀ·B: dV = Pᵀ·dY).
void GemmTN(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc);

// Pins the BLAS library to one thread per call (our workers parallelize) and
// returns a description such as "openblas:Haswell".
std::string InitGemmBackend();

// OpenBLAS's kernel family for this CPU, e.g. "openblas-core:Zen".
std::string GemmCpuDescription();

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_GEMM_H_
