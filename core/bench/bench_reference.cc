#include "bench_reference.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace attnserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
           const float* a, const float* b, float* c, float beta) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, a,
              static_cast<int>(trans_a ? m : k), b,
              static_cast<int>(trans_b ? k : n), beta, c, static_cast<int>(n));
}

// C = A·Bᵀ with the given library on the calling thread alone.
void TileProduct(SgemmLibrary library, int64_t m, int64_t n, int64_t k,
                 const float* a, const float* b, float* c) {
  if (library == SgemmLibrary::kOneDnn) {
    dnnl_sgemm('N', 'T', m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
  } else {
    Sgemm(false, true, m, n, k, a, b, c, 0.0f);
  }
}

}  // namespace

const char* SgemmLibraryName(SgemmLibrary library) {
  return library == SgemmLibrary::kOneDnn ? "onednn" : "openblas";
}

namespace {

// One window of `seconds`: every worker repeats the product until it ends.
double TileSgemmWindow(SgemmLibrary library, int64_t m, int64_t n, int64_t k,
                       int threads, double seconds) {
  std::atomic<int64_t> calls{0};
  std::vector<std::thread> workers;
  const Clock::time_point t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      omp_set_num_threads(1);  // oneDNN: a team of one per caller.
      const std::vector<float> a = Random(m * k, 1 + t), b = Random(k * n, 2);
      std::vector<float> c(static_cast<size_t>(m * n));
      int64_t mine = 0;
      while (Since(t0) < seconds) {
        for (int i = 0; i < 16; ++i) {
          TileProduct(library, m, n, k, a.data(), b.data(), c.data());
        }
        mine += 16;
      }
      calls += mine;
    });
  }
  for (std::thread& w : workers) w.join();
  return 2.0 * static_cast<double>(m * n * k) *
         static_cast<double>(calls.load()) / Since(t0) / 1e9;
}

}  // namespace

double TileSgemmGflops(SgemmLibrary library, int64_t m, int64_t n, int64_t k,
                       int threads, double window_seconds, int windows) {
  openblas_set_num_threads(1);
  double best = 0.0;
  for (int window = 0; window < windows; ++window) {
    best = std::max(best,
                    TileSgemmWindow(library, m, n, k, threads, window_seconds));
  }
  return best;
}

double EagerAttentionSeconds(int64_t heads, int64_t s, int64_t d, bool causal,
                             bool backward, int threads, int repeats) {
  openblas_set_num_threads(threads);
  const std::vector<float> q = Random(s * d, 3), k = Random(s * d, 4),
                           v = Random(s * d, 5), dy = Random(s * d, 6);
  std::vector<float> p(static_cast<size_t>(s * s)),
      o(static_cast<size_t>(s * d));
  std::vector<float> dp, dq, dk, dv;
  if (backward) {
    dp.resize(p.size());
    dq.resize(o.size());
    dk.resize(o.size());
    dv.resize(o.size());
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const Clock::time_point t0 = Clock::now();
    for (int64_t h = 0; h < heads; ++h) {
      Sgemm(false, true, s, s, d, q.data(), k.data(), p.data(), 0.0f);
      for (int64_t i = 0; i < s; ++i) {
        float* row = p.data() + i * s;
        const int64_t end = causal ? i + 1 : s;
        float m = -INFINITY;
        for (int64_t j = 0; j < end; ++j) m = std::max(m, row[j] * scale);
        float sum = 0;
        for (int64_t j = 0; j < end; ++j) {
          row[j] = std::exp(row[j] * scale - m);
          sum += row[j];
        }
        for (int64_t j = 0; j < end; ++j) row[j] /= sum;
        std::fill(row + end, row + s, 0.0f);
      }
      Sgemm(false, false, s, d, s, p.data(), v.data(), o.data(), 0.0f);
      if (!backward) continue;
      Sgemm(false, true, s, s, d, dy.data(), v.data(), dp.data(), 0.0f);
      Sgemm(true, false, s, d, s, p.data(), dy.data(), dv.data(), 0.0f);
      for (int64_t i = 0; i < s; ++i) {
        float rd = 0;
        for (int64_t c = 0; c < d; ++c) rd += dy[i * d + c] * o[i * d + c];
        float* dpr = dp.data() + i * s;
        const float* pr = p.data() + i * s;
        for (int64_t j = 0; j < s; ++j) dpr[j] = pr[j] * (dpr[j] - rd) * scale;
      }
      Sgemm(false, false, s, d, s, dp.data(), k.data(), dq.data(), 0.0f);
      Sgemm(true, false, s, d, s, dp.data(), q.data(), dk.data(), 0.0f);
    }
    best = std::min(best, Since(t0));
  }
  openblas_set_num_threads(1);
  return best;
}

}  // namespace attnserve::bench
