// attnbench: forward and backward throughput of the attention kernels, one
// JSON object per line, each with a same-run reference so that figures from
// noisy machines stay comparable.
//
//   attnbench --threads=2 --dtypes=fp32,bf16 --seqs=2048,4096 --dims=128
//
// Lines: {"kind":"host",...} (CPU model and the flags that decide the
// paths), {"kind":"backend",...} (the engine's backends),
// {"kind":"reference",...} (tile sgemm on `threads` workers, with OpenBLAS
// and with oneDNN, the faster being the reference, and oneDNN's bf16 tile
// matmul, the reference of bf16 cases that run bf16 products; both
// measured again around every case; and one whole-machine n x n oneDNN
// matmul on --threads threads, f32 and bf16, at the start and at the end),
// {"kind":"attention",...} (GFLOP/s, ratio to the reference, and with
// --eager the ratio to eager matmul/softmax/matmul on the same threads), and
// with --memcpy_reference, forward cases also give their bytes per second
// against a same-run memcpy (the memory-bound shapes' reference), and
// {"kind":"rss",...} (peak RSS of a forward at --rss_seq in a child process,
// against the bytes of its inputs and outputs).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "bench_reference.h"

ABSL_FLAG(int, threads, 2, "Threads per request (and for the references).");
ABSL_FLAG(int64_t, b, 1, "Batch.");
ABSL_FLAG(int64_t, n, 8, "Query heads (N1).");
ABSL_FLAG(int64_t, kv_heads, 0,
          "Key/value heads (N2, dividing N1; 0: N2 = N1). 1 is MQA.");
ABSL_FLAG(std::string, dtypes, "fp32,fp16,bf16", "Comma-separated dtypes.");
ABSL_FLAG(std::string, seqs, "512,1024,2048,4096,8192",
          "Sequence lengths (of the queries when --skv is set).");
ABSL_FLAG(int64_t, skv, 0,
          "Key/value sequence length (0: the --seqs value, Sq = Skv).");
ABSL_FLAG(bool, memcpy_reference, false,
          "Measure memcpy of the case's bytes (inputs and outputs) just "
          "before and just after every forward case and report the bytes "
          "per second against the better of the two.");
ABSL_FLAG(std::string, dims, "64,128", "Head dims.");
ABSL_FLAG(std::string, causal, "0,1", "0 = full, 1 = causal (sparse_mode 2).");
ABSL_FLAG(std::string, directions, "forward,backward", "Directions.");
ABSL_FLAG(double, min_seconds, 1.0,
          "Each figure is the best of runs filling at least this long.");
ABSL_FLAG(bool, eager, true, "Also time eager attention at S <= 4096.");
ABSL_FLAG(bool, cpu_clock, false,
          "Time the kernels and every reference with the process CPU clock "
          "divided by --threads instead of the wall clock (steadier on a "
          "shared machine; exact for one thread).");
ABSL_FLAG(int64_t, rss_seq, 16384, "Sequence of the peak-RSS run (0: skip).");
ABSL_FLAG(bool, bf16_tile_products, true,
          "Let BFLOAT16 cases run bf16 tile products where the CPU has them "
          "(false: the fp32 products, for comparison).");
ABSL_FLAG(int64_t, matmul_n, 2048,
          "Side of the whole-machine oneDNN matmul reference (f32, and bf16 "
          "where the host has it) on --threads threads; 0: skip it.");
ABSL_FLAG(bool, adjacent_reference, true,
          "Measure the faster library's tile sgemm just before and just after "
          "every case and divide by the better of the two (a shared machine's "
          "speed drifts; a reference from the start of the run does not "
          "follow it).");

namespace attnserve::bench {
namespace {

using core::DType;
using Clock = std::chrono::steady_clock;

std::vector<std::string> Words(const std::string& csv) {
  return absl::StrSplit(csv, ',', absl::SkipEmpty());
}

std::vector<int64_t> Ints(const std::string& csv) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(csv, ',', absl::SkipEmpty())) {
    out.push_back(std::stoll(std::string(part)));
  }
  return out;
}

DType ParseDType(const std::string& name) {
  if (name == "fp16") return DType::kFloat16;
  if (name == "bf16") return DType::kBFloat16;
  return DType::kFloat32;
}

core::HostTensor RandomTensor(DType dtype, std::vector<int64_t> shape,
                              uint32_t seed) {
  core::HostTensor t = core::MakeHostTensor(dtype, std::move(shape));
  const size_t n = t.bytes.size() / core::ItemSize(dtype);
  std::vector<float> values(n);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : values) v = dist(gen);
  core::FromFloat(dtype, values.data(), t.bytes.data(), n);
  return t;
}

struct Problem {
  core::HostTensor q, k, v, dy;
  core::AttentionOptions options;
};

int64_t KvSeq(int64_t s) {
  const int64_t skv = absl::GetFlag(FLAGS_skv);
  return skv > 0 ? skv : s;
}

Problem MakeProblem(DType dtype, int64_t b, int64_t n, int64_t s, int64_t d,
                    bool causal) {
  Problem p;
  p.q = RandomTensor(dtype, {b, n, s, d}, 1);
  const int64_t kv = absl::GetFlag(FLAGS_kv_heads);
  const int64_t n2 = kv > 0 ? kv : n;
  p.k = RandomTensor(dtype, {b, n2, KvSeq(s), d}, 2);
  p.v = RandomTensor(dtype, {b, n2, KvSeq(s), d}, 3);
  p.dy = RandomTensor(dtype, {b, n, s, d}, 4);
  p.options.head_num = n;
  p.options.input_layout = "BNSD";
  p.options.scale_value = 1.0 / std::sqrt(static_cast<double>(d));
  p.options.sparse_mode = causal ? 2 : 0;
  return p;
}

// Best wall time of `fn` over runs filling min_seconds (at least 2 runs).
template <typename Fn>
double BestSeconds(Fn&& fn) {
  const double budget = absl::GetFlag(FLAGS_min_seconds);
  const int threads = absl::GetFlag(FLAGS_threads);
  double best = 1e30, total = 0;
  for (int run = 0; run < 2 || total < budget; ++run) {
    const double start = Now();
    fn();
    const double dt = SecondsSince(start, threads);
    best = std::min(best, dt);
    total += dt;
  }
  return best;
}

void Die(const absl::Status& status) {
  std::fprintf(stderr, "attnbench: %s\n", status.ToString().c_str());
  std::exit(1);
}

// GB/s of memcpy of `bytes` on one thread (the source and destination
// touched once first), the best of runs filling 0.25 s.
double MemcpyGbps(size_t bytes) {
  std::vector<char> from(bytes, 1), to(bytes, 0);
  double best = 1e30, total = 0;
  for (int run = 0; run < 2 || total < 0.25; ++run) {
    const auto start = Clock::now();
    std::memcpy(to.data(), from.data(), bytes);
    const double dt =
        std::chrono::duration<double>(Clock::now() - start).count();
    best = std::min(best, dt);
    total += dt;
  }
  if (to[bytes / 2] != 1) std::abort();
  return static_cast<double>(bytes) / best / 1e9;
}

// The tile reference of head dim `d` in `lib`: the harmonic mean of the
// score product [128 x D]·[D x 128] and the output product
// [128 x 128]·[128 x D], each the best of `windows` windows of 0.25 s.
double TileReference(SgemmLibrary lib, int64_t d, int windows) {
  const int threads = absl::GetFlag(FLAGS_threads);
  const double qk = TileSgemmGflops(lib, 128, 128, d, threads, 0.25, windows);
  const double pv = TileSgemmGflops(lib, 128, d, 128, threads, 0.25, windows);
  return 2.0 / (1.0 / qk + 1.0 / pv);
}

// The same for oneDNN's bf16 matmul (0 when the host has none).
double TileBf16Reference(int64_t d, int windows) {
  const int threads = absl::GetFlag(FLAGS_threads);
  std::string why_not;
  const double qk =
      TileBf16Gflops(128, 128, d, true, threads, 0.25, windows, &why_not);
  const double pv =
      TileBf16Gflops(128, d, 128, false, threads, 0.25, windows, &why_not);
  return qk > 0 && pv > 0 ? 2.0 / (1.0 / qk + 1.0 / pv) : 0.0;
}

// The whole-machine matmul reference of one precision, printed.
double MatmulReference(bool bf16) {
  const int64_t n = absl::GetFlag(FLAGS_matmul_n);
  if (n <= 0) return 0.0;
  const int threads = absl::GetFlag(FLAGS_threads);
  std::string impl;
  const double gflops = MatmulGflops(bf16, n, threads, 1.0, &impl);
  std::printf(
      "{\"kind\":\"reference\",\"what\":\"matmul\",\"dtype\":\"%s\","
      "\"n\":%lld,\"threads\":%d,\"implementation\":\"%s\","
      "\"gflops\":%.2f}\n",
      bf16 ? "bf16" : "f32", static_cast<long long>(n), threads, impl.c_str(),
      gflops);
  std::fflush(stdout);
  return gflops;
}

// "model name" and the CPU flags of /proc/cpuinfo that decide the paths.
std::string HostLine() {
  std::string model, flags;
  if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
    char line[8192];
    while (std::fgets(line, sizeof(line), f) != nullptr &&
           (model.empty() || flags.empty())) {
      const std::string text(line);
      const size_t colon = text.find(':');
      if (colon == std::string::npos) continue;
      std::string value = text.substr(colon + 1);
      while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) {
        value.pop_back();
      }
      if (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (model.empty() && text.rfind("model name", 0) == 0) model = value;
      if (flags.empty() && text.rfind("flags", 0) == 0) flags = value;
    }
    std::fclose(f);
  }
  std::string kept;
  for (absl::string_view flag : absl::StrSplit(flags, ' ')) {
    for (const char* wanted :
         {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
          "amx_bf16", "amx_tile"}) {
      if (flag == wanted) absl::StrAppend(&kept, kept.empty() ? "" : " ", flag);
    }
  }
  return absl::StrCat(
      "{\"kind\":\"host\",\"cpu\":\"", model, "\",\"cpu_flags\":\"", kept,
      "\",\"onednn_bf16_matmul\":\"", Bf16MatmulImplementation(), "\"}\n");
}

// Whole-machine matmul rates measured at the start of the run.
struct MatmulRates {
  double f32 = 0, bf16 = 0;
};

void RunCase(core::Engine& engine, DType dtype, int64_t s, int64_t d,
             bool causal, const std::string& direction, SgemmLibrary ref_lib,
             double ref_gflops, double bf16_ref_gflops,
             const MatmulRates& matmul) {
  const bool adjacent = absl::GetFlag(FLAGS_adjacent_reference);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int64_t b = absl::GetFlag(FLAGS_b), n = absl::GetFlag(FLAGS_n);
  const bool allow_bf16 = engine.bf16_tile_products();
  Problem p = MakeProblem(dtype, b, n, s, d, causal);
  const core::ForwardArgs fwd{p.q.view(), p.k.view(), p.v.view(), p.options};
  absl::StatusOr<core::ForwardCall> fcall =
      core::ForwardCall::Prepare(fwd, threads, allow_bf16);
  if (!fcall.ok()) Die(fcall.status());
  const bool bf16_products =
      fcall->plan().tiling.products == core::TileProducts::kBFloat16;
  if (adjacent) {
    ref_gflops = TileReference(ref_lib, d, 2);
    if (bf16_products) bf16_ref_gflops = TileBf16Reference(d, 2);
  }
  core::CancelToken token;
  double seconds = 0, flops = 0;
  uint64_t workspace = 0;
  std::string memory;
  if (direction == "forward") {
    size_t io_bytes = 0;
    const bool by_memcpy = absl::GetFlag(FLAGS_memcpy_reference);
    double memcpy_gbps = 0;
    {
      absl::StatusOr<core::ForwardResult> r = engine.Run(*fcall, token);
      if (!r.ok()) Die(r.status());
      io_bytes = p.q.bytes.size() + p.k.bytes.size() + p.v.bytes.size() +
                 r->attention_out.bytes.size() + r->softmax_max.bytes.size() +
                 r->softmax_sum.bytes.size();
    }
    if (by_memcpy) memcpy_gbps = MemcpyGbps(io_bytes);
    seconds = BestSeconds([&] {
      absl::StatusOr<core::ForwardResult> r = engine.Run(*fcall, token);
      if (!r.ok()) Die(r.status());
      workspace = r->stats.workspace_bytes;
    });
    flops = fcall->flops();
    const double gbps = static_cast<double>(io_bytes) / seconds / 1e9;
    absl::StrAppend(&memory, ",\"io_bytes\":", io_bytes,
                    ",\"io_gb_per_s\":", gbps);
    if (by_memcpy) {
      memcpy_gbps = std::max(memcpy_gbps, MemcpyGbps(io_bytes));
      absl::StrAppend(&memory, ",\"memcpy_gb_per_s\":", memcpy_gbps,
                      ",\"ratio_to_memcpy\":", gbps / memcpy_gbps);
    }
  } else {
    absl::StatusOr<core::ForwardResult> f = engine.Run(*fcall, token);
    if (!f.ok()) Die(f.status());
    core::BackwardArgs bwd;
    bwd.query = p.q.view();
    bwd.key = p.k.view();
    bwd.value = p.v.view();
    bwd.dy = p.dy.view();
    bwd.softmax_max = f->softmax_max.view();
    bwd.softmax_sum = f->softmax_sum.view();
    bwd.attention_in = f->attention_out.view();
    bwd.options = p.options;
    absl::StatusOr<core::BackwardCall> bcall =
        core::BackwardCall::Prepare(bwd, threads, allow_bf16);
    if (!bcall.ok()) Die(bcall.status());
    seconds = BestSeconds([&] {
      absl::StatusOr<core::BackwardResult> r = engine.Run(*bcall, token);
      if (!r.ok()) Die(r.status());
      workspace = r->stats.workspace_bytes;
    });
    flops = bcall->flops();
  }
  if (adjacent) {
    ref_gflops = std::max(ref_gflops, TileReference(ref_lib, d, 2));
    if (bf16_products) {
      bf16_ref_gflops = std::max(bf16_ref_gflops, TileBf16Reference(d, 2));
    }
  }
  const double gflops = flops / seconds / 1e9;
  std::string bf16_ref;
  if (bf16_products && bf16_ref_gflops > 0) {
    absl::StrAppend(&bf16_ref, ",\"tile_bf16_gflops\":", bf16_ref_gflops,
                    ",\"ratio_to_tile_bf16\":", gflops / bf16_ref_gflops);
  }
  const double matmul_gflops = bf16_products ? matmul.bf16 : matmul.f32;
  if (matmul_gflops > 0) {
    absl::StrAppend(&bf16_ref, ",\"matmul_gflops\":", matmul_gflops,
                    ",\"ratio_to_matmul\":", gflops / matmul_gflops);
  }
  std::string eager;
  if (absl::GetFlag(FLAGS_eager) && s <= 4096 && b == 1 && KvSeq(s) == s) {
    const double eager_s = EagerAttentionSeconds(
        n, s, d, causal, direction == "backward", threads, 2);
    absl::StrAppend(&eager, ",\"eager_fp32_seconds\":", eager_s,
                    ",\"speedup_vs_eager_fp32\":", eager_s / seconds);
  }
  std::printf(
      "{\"kind\":\"attention\",\"direction\":\"%s\",\"dtype\":\"%s\","
      "\"tile_products\":\"%s\","
      "\"b\":%lld,\"n\":%lld,\"kv_heads\":%lld,\"s\":%lld,\"skv\":%lld,"
      "\"d\":%lld,"
      "\"causal\":%s,"
      "\"threads\":%d,\"seconds\":%.6f,\"gflops_dense\":%.2f,"
      "\"tile_sgemm_gflops\":%.2f,\"ratio_to_tile_sgemm\":%.3f%s,"
      "\"workspace_bytes\":%llu%s%s}\n",
      direction.c_str(), core::DTypeName(dtype),
      core::TileProductsName(fcall->plan().tiling.products),
      static_cast<long long>(b), static_cast<long long>(n),
      static_cast<long long>(absl::GetFlag(FLAGS_kv_heads) > 0
                                 ? absl::GetFlag(FLAGS_kv_heads)
                                 : n),
      static_cast<long long>(s), static_cast<long long>(KvSeq(s)),
      static_cast<long long>(d), causal ? "true" : "false", threads, seconds,
      gflops, ref_gflops, gflops / ref_gflops, bf16_ref.c_str(),
      static_cast<unsigned long long>(workspace), memory.c_str(),
      eager.c_str());
  std::fflush(stdout);
}

// Peak RSS of one fp32 forward at `s` in a child process, against the bytes
// of its inputs and outputs.
void MeasureRss(int64_t s) {
  const int threads = absl::GetFlag(FLAGS_threads);
  const int64_t b = absl::GetFlag(FLAGS_b), n = absl::GetFlag(FLAGS_n);
  const int64_t d = 128;
  int fds[2];
  if (pipe(fds) != 0) return;
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    struct rusage before;
    getrusage(RUSAGE_SELF, &before);
    core::Engine engine(core::EngineOptions{0, threads});
    Problem p = MakeProblem(DType::kFloat32, b, n, s, d, false);
    const core::ForwardArgs fwd{p.q.view(), p.k.view(), p.v.view(), p.options};
    absl::StatusOr<core::ForwardCall> call =
        core::ForwardCall::Prepare(fwd, threads);
    if (!call.ok()) _exit(1);
    core::CancelToken token;
    absl::StatusOr<core::ForwardResult> r = engine.Run(*call, token);
    if (!r.ok()) _exit(1);
    struct rusage after;
    getrusage(RUSAGE_SELF, &after);
    const double io = static_cast<double>(
        p.q.bytes.size() + p.k.bytes.size() + p.v.bytes.size() +
        r->attention_out.bytes.size() + r->softmax_max.bytes.size() +
        r->softmax_sum.bytes.size());
    const std::string line = absl::StrCat(
        "{\"kind\":\"rss\",\"s\":", s, ",\"d\":", d, ",\"n\":", n,
        ",\"peak_rss_bytes\":", after.ru_maxrss * 1024,
        ",\"rss_before_bytes\":", before.ru_maxrss * 1024,
        ",\"inputs_outputs_bytes\":", io,
        ",\"peak_over_io\":", (after.ru_maxrss * 1024.0) / io, "}\n");
    if (write(fds[1], line.data(), line.size()) < 0) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  char buf[512];
  ssize_t got;
  while ((got = read(fds[0], buf, sizeof(buf))) > 0) {
    fwrite(buf, 1, static_cast<size_t>(got), stdout);
  }
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
}

}  // namespace
}  // namespace attnserve::bench

int main(int argc, char** argv) {
  using namespace attnserve::bench;  // NOLINT
  absl::ParseCommandLine(argc, argv);
  // The RSS child forks before anything else grows the heap.
  const int64_t rss_seq = absl::GetFlag(FLAGS_rss_seq);
  if (rss_seq > 0) MeasureRss(rss_seq);

  const int threads = absl::GetFlag(FLAGS_threads);
  UseCpuClock(absl::GetFlag(FLAGS_cpu_clock));
  attnserve::core::Engine engine(attnserve::core::EngineOptions{
      0, threads, absl::GetFlag(FLAGS_bf16_tile_products)});
  std::printf("%s", HostLine().c_str());
  std::printf("{\"kind\":\"backend\",\"backends\":\"%s\"}\n",
              absl::StrJoin(engine.backends(), ", ").c_str());
  const std::vector<int64_t> dims = Ints(absl::GetFlag(FLAGS_dims));
  std::vector<double> ref(dims.size(), 0.0);
  std::vector<SgemmLibrary> ref_lib(dims.size(), SgemmLibrary::kOpenBlas);
  for (size_t i = 0; i < dims.size(); ++i) {
    // The kernels' tile products in each library; the faster library is the
    // reference.
    for (const SgemmLibrary lib :
         {SgemmLibrary::kOpenBlas, SgemmLibrary::kOneDnn}) {
      const double gflops = TileReference(lib, dims[i], 4);
      if (gflops > ref[i]) {
        ref[i] = gflops;
        ref_lib[i] = lib;
      }
      std::printf(
          "{\"kind\":\"reference\",\"what\":\"tile_sgemm\",\"library\":"
          "\"%s\",\"d\":%lld,\"threads\":%d,\"gflops\":%.2f}\n",
          SgemmLibraryName(lib), static_cast<long long>(dims[i]), threads,
          gflops);
      std::fflush(stdout);
    }
  }
  // oneDNN's bf16 tile matmul, when a case will use bf16 products.
  std::vector<double> bf16_ref(dims.size(), 0.0);
  const std::vector<std::string> dtypes = Words(absl::GetFlag(FLAGS_dtypes));
  const bool bf16_cases =
      std::find(dtypes.begin(), dtypes.end(), "bf16") != dtypes.end() &&
      attnserve::core::ChooseTileProducts(attnserve::core::DType::kBFloat16,
                                          engine.bf16_tile_products()) ==
          attnserve::core::TileProducts::kBFloat16;
  for (size_t i = 0; bf16_cases && i < dims.size(); ++i) {
    bf16_ref[i] = TileBf16Reference(dims[i], 4);
    std::printf(
        "{\"kind\":\"reference\",\"what\":\"tile_bf16_matmul\",\"library\":"
        "\"onednn\",\"d\":%lld,\"threads\":%d,\"gflops\":%.2f}\n",
        static_cast<long long>(dims[i]), threads, bf16_ref[i]);
    std::fflush(stdout);
  }
  MatmulRates matmul;
  matmul.f32 = MatmulReference(false);
  if (bf16_cases) matmul.bf16 = MatmulReference(true);
  for (const std::string& dt : dtypes) {
    for (int64_t s : Ints(absl::GetFlag(FLAGS_seqs))) {
      for (size_t i = 0; i < dims.size(); ++i) {
        for (int64_t causal : Ints(absl::GetFlag(FLAGS_causal))) {
          for (const std::string& dir :
               Words(absl::GetFlag(FLAGS_directions))) {
            RunCase(engine, ParseDType(dt), s, dims[i], causal != 0, dir,
                    ref_lib[i], ref[i], bf16_ref[i], matmul);
          }
        }
      }
    }
  }
  // Again at the end: how far the machine drifted during the run.
  MatmulReference(false);
  if (bf16_cases) MatmulReference(true);
  return 0;
}
