#include "runtime/bf16_gemm.h"

#include <omp.h>

#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "attnserve/core/dtype.h"

namespace attnserve::core {
namespace {

using dnnl::memory;
using DataType = dnnl::memory::data_type;

// oneDNN's ISA masks: avx512_core_bf16 (and amx, a superset) include these
// bits; emulated bf16 on avx512_core does not.
constexpr unsigned kBf16IsaBits = dnnl_cpu_isa_avx512_core_bf16;

dnnl::engine& CpuEngine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

memory::desc Matrix(int64_t rows, int64_t cols, int64_t ld, bool transposed,
                    DataType type) {
  // A row-major [rows, cols] view; transposed: the memory holds [cols, rows]
  // with leading dimension ld.
  const memory::dims strides =
      transposed ? memory::dims{1, ld} : memory::dims{ld, 1};
  return memory::desc({rows, cols}, type, strides);
}

dnnl::matmul::primitive_desc MakeDesc(const Bf16GemmShape& s) {
  const memory::desc a =
      Matrix(s.m, s.k, s.lda, s.a_transposed, DataType::bf16);
  const memory::desc b =
      Matrix(s.k, s.n, s.ldb, s.b_transposed, DataType::bf16);
  const memory::desc c = Matrix(s.m, s.n, s.ldc, false, DataType::f32);
  dnnl::primitive_attr attr;
  if (s.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr,
                                      CpuEngine());
}

Bf16ProductSupport Probe() {
  Bf16ProductSupport support;
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  if ((isa & kBf16IsaBits) != kBf16IsaBits) {
    support.detail =
        "no native bf16 dot products (oneDNN's CPU ISA is below "
        "avx512_core_bf16)";
    return support;
  }
  try {
    const Bf16GemmShape tile{128, 128, 128, 128, 128, 128, false, true, false};
    const dnnl::matmul::primitive_desc desc = MakeDesc(tile);
    const std::string impl = desc.impl_info_str();
    dnnl::matmul probe(desc);  // Generates the code: creation must succeed.
    support.available = true;
    support.detail = impl;
  } catch (const dnnl::error& e) {
    support.detail =
        std::string("oneDNN cannot create a bf16 matmul: ") + e.what();
  }
  return support;
}

// One cached product: the primitive and memory objects whose data handles
// are swapped in per call. `widened` marks a shape oneDNN could not make a
// bf16 primitive for (not seen on any host so far): it runs as fp32 sgemm
// on widened operands instead, which gives the same exact products.
struct Entry {
  dnnl::matmul primitive;
  memory a, b, c;
  bool widened = false;
};

struct ShapeHash {
  size_t operator()(const Bf16GemmShape& s) const {
    size_t h = 0;
    for (int64_t v : {s.m, s.n, s.k, s.lda, s.ldb, s.ldc}) {
      h = h * 1000003u ^ static_cast<size_t>(v);
    }
    return h * 8 + (s.a_transposed ? 4u : 0u) + (s.b_transposed ? 2u : 0u) +
           (s.accumulate ? 1u : 0u);
  }
};

struct ShapeEqual {
  bool operator()(const Bf16GemmShape& x, const Bf16GemmShape& y) const {
    return x.m == y.m && x.n == y.n && x.k == y.k && x.lda == y.lda &&
           x.ldb == y.ldb && x.ldc == y.ldc &&
           x.a_transposed == y.a_transposed &&
           x.b_transposed == y.b_transposed && x.accumulate == y.accumulate;
  }
};

// Primitives of the calling thread. oneDNN primitives may run on several
// threads at once, but memory objects and streams may not; keeping all
// three per thread also keeps each call's scratchpad the thread's own.
class ThreadCache {
 public:
  // A bound on the primitives one thread keeps: the kernels' padded tiles
  // need a few dozen per head dim; past this the cache starts over (the
  // generated code stays in oneDNN's own primitive cache).
  static constexpr size_t kMaxEntries = 1024;

  ThreadCache() : stream_(CpuEngine()) {
    omp_set_num_threads(1);  // Our workers parallelize; oneDNN must not.
  }

  Entry& Get(const Bf16GemmShape& shape) {
    auto it = entries_.find(shape);
    if (it != entries_.end()) return it->second;
    if (entries_.size() >= kMaxEntries) entries_.clear();
    Entry entry;
    try {
      const dnnl::matmul::primitive_desc desc = MakeDesc(shape);
      entry.primitive = dnnl::matmul(desc);
      entry.a = memory(desc.src_desc(), CpuEngine(), DNNL_MEMORY_NONE);
      entry.b = memory(desc.weights_desc(), CpuEngine(), DNNL_MEMORY_NONE);
      entry.c = memory(desc.dst_desc(), CpuEngine(), DNNL_MEMORY_NONE);
    } catch (const dnnl::error&) {
      entry = Entry{};
      entry.widened = true;
    }
    return entries_.emplace(shape, std::move(entry)).first->second;
  }

  dnnl::stream& stream() { return stream_; }
  std::vector<float>& a32() { return a32_; }
  std::vector<float>& b32() { return b32_; }

 private:
  dnnl::stream stream_;
  std::unordered_map<Bf16GemmShape, Entry, ShapeHash, ShapeEqual> entries_;
  std::vector<float> a32_, b32_;  // Widened operands (Entry::widened).
};

// The product on fp32 copies of the operands: bf16 x bf16 products are
// exact in fp32, so this is the same product with fp32 sgemm's order of
// sums. Empty shapes never reach it (the kernels skip them).
void WidenedGemm(const Bf16GemmShape& s, const uint16_t* a, const uint16_t* b,
                 float* c, ThreadCache& cache) {
  // Stored rows x columns of each operand; the last row ends at its last
  // column (the caller's buffer may end there).
  const int64_t a_rows = s.a_transposed ? s.k : s.m;
  const int64_t a_cols = s.a_transposed ? s.m : s.k;
  const int64_t b_rows = s.b_transposed ? s.n : s.k;
  const int64_t b_cols = s.b_transposed ? s.k : s.n;
  std::vector<float>& a32 = cache.a32();
  std::vector<float>& b32 = cache.b32();
  a32.resize(static_cast<size_t>((a_rows - 1) * s.lda + a_cols));
  b32.resize(static_cast<size_t>((b_rows - 1) * s.ldb + b_cols));
  for (size_t i = 0; i < a32.size(); ++i) a32[i] = Bf16ToFloat(a[i]);
  for (size_t i = 0; i < b32.size(); ++i) b32[i] = Bf16ToFloat(b[i]);
  dnnl_sgemm(s.a_transposed ? 'T' : 'N', s.b_transposed ? 'T' : 'N', s.m, s.n,
             s.k, 1.0f, a32.data(), s.lda, b32.data(), s.ldb,
             s.accumulate ? 1.0f : 0.0f, c, s.ldc);
}

}  // namespace

const Bf16ProductSupport& Bf16Products() {
  static const Bf16ProductSupport* support = new Bf16ProductSupport(Probe());
  return *support;
}

void Bf16Gemm(const Bf16GemmShape& shape, const uint16_t* a, const uint16_t* b,
              float* c) {
  thread_local ThreadCache cache;
  Entry& e = cache.Get(shape);
  if (e.widened) {
    WidenedGemm(shape, a, b, c, cache);
    return;
  }
  // The C API: no argument map is built per call.
  dnnl_memory_set_data_handle_v2(e.a.get(), const_cast<uint16_t*>(a), nullptr);
  dnnl_memory_set_data_handle_v2(e.b.get(), const_cast<uint16_t*>(b), nullptr);
  dnnl_memory_set_data_handle_v2(e.c.get(), c, nullptr);
  const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e.a.get()},
                                   {DNNL_ARG_WEIGHTS, e.b.get()},
                                   {DNNL_ARG_DST, e.c.get()}};
  if (dnnl_primitive_execute(e.primitive.get(), cache.stream().get(), 3,
                             args) != dnnl_success) {
    WidenedGemm(shape, a, b, c, cache);  // Never seen; stay correct anyway.
  }
}

void Bf16GemmWidened(const Bf16GemmShape& shape, const uint16_t* a,
                     const uint16_t* b, float* c) {
  thread_local ThreadCache cache;
  WidenedGemm(shape, a, b, c, cache);
}

std::string Bf16ProductsDescription() {
  const Bf16ProductSupport& s = Bf16Products();
  return s.available ? "onednn-bf16-matmul:" + s.detail
                     : "onednn-bf16-matmul:off (" + s.detail + ")";
}

}  // namespace attnserve::core
