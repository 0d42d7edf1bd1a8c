#include "runtime/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace attnserve::core {
namespace {

// Which library runs the tile products. oneDNN's sgemm (just-in-time
// generated kernels) is faster than OpenBLAS on attention tile shapes, so it
// is the default; ATTNSERVE_GEMM=openblas selects OpenBLAS.
enum class Backend { kOneDnn, kOpenBlas };

Backend ChosenBackend() {
  static const Backend backend = [] {
    const char* env = std::getenv("ATTNSERVE_GEMM");
    return env != nullptr && std::strcmp(env, "openblas") == 0
               ? Backend::kOpenBlas
               : Backend::kOneDnn;
  }();
  return backend;
}

// oneDNN parallelizes a call over the calling thread's OpenMP team; our
// workers parallelize across tiles, so every calling thread asks for a team
// of one, once.
void SingleThreadedOmp() {
  thread_local bool done = false;
  if (!done) {
    omp_set_num_threads(1);
    done = true;
  }
}

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
          float beta, float* c, int64_t ldc) {
  if (ChosenBackend() == Backend::kOneDnn) {
    SingleThreadedOmp();
    dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda,
               b, ldb, beta, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
              static_cast<int>(ldc));
}

}  // namespace

void GemmNT(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc) {
  Gemm(false, true, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void GemmNN(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc) {
  Gemm(false, false, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void GemmTN(int64_t m, int64_t n, int64_t k, float alpha, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c,
            int64_t ldc) {
  Gemm(true, false, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::string InitGemmBackend() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  if (ChosenBackend() == Backend::kOneDnn) {
    const dnnl_version_t* v = dnnl_version();
    return "onednn-sgemm:" + std::to_string(v->major) + "." +
           std::to_string(v->minor) + "." + std::to_string(v->patch);
  }
  return std::string("openblas:") + openblas_get_corename();
}

std::string GemmCpuDescription() {
  return std::string("openblas-core:") + openblas_get_corename();
}

}  // namespace attnserve::core
