#include "bench_reference.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <thread>
#include <vector>

namespace attnserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool cpu_clock = false;

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

void UseCpuClock(bool use) { cpu_clock = use; }

double Now() {
  if (!cpu_clock) {
    return std::chrono::duration<double>(Clock::now().time_since_epoch())
        .count();
  }
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double SecondsSince(double start, int threads) {
  const double elapsed = Now() - start;
  return cpu_clock ? elapsed / threads : elapsed;
}

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
  const double start = Now();
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
         static_cast<double>(calls.load()) / SecondsSince(start, threads) / 1e9;
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

namespace {

dnnl::matmul::primitive_desc Bf16TileDesc(const dnnl::engine& engine, int64_t m,
                                          int64_t n, int64_t k,
                                          bool b_transposed) {
  using dnnl::memory;
  const memory::desc a({m, k}, memory::data_type::bf16, memory::dims{k, 1});
  const memory::desc b({k, n}, memory::data_type::bf16,
                       b_transposed ? memory::dims{1, k} : memory::dims{n, 1});
  const memory::desc c({m, n}, memory::data_type::f32, memory::dims{n, 1});
  dnnl::primitive_attr attr;
  if (!b_transposed) {  // The output product accumulates.
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr,
                                      engine);
}

}  // namespace

std::string Bf16MatmulImplementation() {
  try {
    const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return Bf16TileDesc(engine, 128, 128, 128, true).impl_info_str();
  } catch (const dnnl::error&) {
    return "";
  }
}

double TileBf16Gflops(int64_t m, int64_t n, int64_t k, bool b_transposed,
                      int threads, double window_seconds, int windows,
                      std::string* why_not) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::matmul::primitive_desc desc;
  try {
    desc = Bf16TileDesc(engine, m, n, k, b_transposed);
  } catch (const dnnl::error& e) {
    *why_not = e.what();
    return 0.0;
  }
  const dnnl::matmul primitive(desc);
  double best = 0.0;
  for (int window = 0; window < windows; ++window) {
    std::atomic<int64_t> calls{0};
    std::vector<std::thread> workers;
    const Clock::time_point t0 = Clock::now();
    const double start = Now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        omp_set_num_threads(1);
        // Operands of about +-1 (bf16 bit patterns of random floats).
        std::vector<uint16_t> a(static_cast<size_t>(m * k)),
            b(static_cast<size_t>(k * n));
        const std::vector<float> ra = Random(m * k, 1 + t),
                                 rb = Random(k * n, 2);
        for (size_t i = 0; i < a.size(); ++i) {
          uint32_t bits;
          std::memcpy(&bits, &ra[i], 4);
          a[i] = static_cast<uint16_t>(bits >> 16);
        }
        for (size_t i = 0; i < b.size(); ++i) {
          uint32_t bits;
          std::memcpy(&bits, &rb[i], 4);
          b[i] = static_cast<uint16_t>(bits >> 16);
        }
        std::vector<float> c(static_cast<size_t>(m * n));
        const dnnl::memory am(desc.src_desc(), engine, a.data());
        const dnnl::memory bm(desc.weights_desc(), engine, b.data());
        const dnnl::memory cm(desc.dst_desc(), engine, c.data());
        const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am.get()},
                                         {DNNL_ARG_WEIGHTS, bm.get()},
                                         {DNNL_ARG_DST, cm.get()}};
        dnnl::stream stream(engine);
        int64_t mine = 0;
        while (Since(t0) < window_seconds) {
          for (int i = 0; i < 16; ++i) {
            dnnl_primitive_execute(primitive.get(), stream.get(), 3, args);
          }
          mine += 16;
        }
        calls += mine;
      });
    }
    for (std::thread& w : workers) w.join();
    best = std::max(best, 2.0 * static_cast<double>(m * n * k) *
                              static_cast<double>(calls.load()) /
                              SecondsSince(start, threads) / 1e9);
  }
  return best;
}

double MatmulGflops(bool bf16, int64_t n, int threads, double seconds,
                    std::string* implementation) {
  using dnnl::memory;
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const memory::data_type in =
      bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::desc a({n, n}, in, memory::dims{n, 1});
  const memory::desc c({n, n}, memory::data_type::f32, memory::dims{n, 1});
  dnnl::matmul::primitive_desc desc;
  try {
    desc = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, a, c), engine);
  } catch (const dnnl::error&) {
    *implementation = "";
    return 0.0;
  }
  *implementation = desc.impl_info_str();
  const dnnl::matmul primitive(desc);
  const size_t item = bf16 ? 2 : 4;
  // Operands of about +-1: the upper halves of random floats for bf16.
  const std::vector<float> values = Random(n * n, 7);
  std::vector<char> x(static_cast<size_t>(n * n) * item);
  for (size_t i = 0; i < values.size(); ++i) {
    std::memcpy(x.data() + i * item,
                reinterpret_cast<const char*>(&values[i]) + (bf16 ? 2 : 0),
                item);
  }
  std::vector<float> out(static_cast<size_t>(n * n));
  const memory xm(a, engine, x.data()), om(c, engine, out.data());
  dnnl::stream stream(engine);
  omp_set_num_threads(threads);
  double best = 1e30, total = 0;
  for (int run = 0; run < 3 || total < seconds; ++run) {
    const double start = Now();
    primitive.execute(
        stream,
        {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, xm}, {DNNL_ARG_DST, om}});
    stream.wait();
    const double dt = SecondsSince(start, threads);
    best = std::min(best, dt);
    total += dt;
  }
  omp_set_num_threads(1);
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) *
         static_cast<double>(n) / best / 1e9;
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
    const double start = Now();
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
    best = std::min(best, SecondsSince(start, threads));
  }
  openblas_set_num_threads(1);
  return best;
}

}  // namespace attnserve::bench
