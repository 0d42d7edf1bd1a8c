// The bf16 tile path: oneDNN's bf16 products, the bf16 tile moves, the
// fused softmax rows, and how plans and engines choose the products (with
// the off switch). Tests that need bf16 products skip on hosts without
// them and say why; the feature tests run BFLOAT16 cases through whichever
// products the host has (see bf16_dispatch_test.cc for forced ISAs).
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "attnserve/core/dtype.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/prepared_call.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/bf16_gemm.h"
#include "runtime/bf16_tiles.h"
#include "runtime/softmax_rows.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::Bf16GemmShape;
using core::Bf16Products;
using core::DType;
using core::TileProducts;
using ::testing::HasSubstr;

#define SKIP_WITHOUT_BF16_PRODUCTS()                                   \
  if (!Bf16Products().available) {                                     \
    GTEST_SKIP() << "this host has no bf16 tile products: "            \
                 << Bf16Products().detail                              \
                 << " (BFLOAT16 requests run the fp32 products here)"; \
  }

std::vector<uint16_t> RandomBf16(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<uint16_t> out(static_cast<size_t>(n));
  for (uint16_t& v : out) v = core::FloatToBf16(dist(gen));
  return out;
}

double Bf16Value(uint16_t b) { return core::Bf16ToFloat(b); }

// Element (i, j) of a row-major [rows, cols] view that may be stored
// transposed.
double At(const std::vector<uint16_t>& m, int64_t ld, bool transposed,
          int64_t i, int64_t j) {
  return Bf16Value(
      m[static_cast<size_t>(transposed ? j * ld + i : i * ld + j)]);
}

// Bf16Gemm (oneDNN's bf16 primitives) and Bf16GemmWidened (its fallback,
// fp32 sgemm on widened operands) against float64.
void CheckProductsMatchFloat64(bool widened) {
  struct Case {
    int64_t m, n, k;
  };
  // Odd head dims too (a request's D and Dv are not padded), and the few
  // unpadded query rows of decoding (RoundUpProductRows).
  for (const Case& c :
       {Case{128, 128, 128}, Case{48, 64, 40}, Case{16, 32, 192},
        Case{96, 16, 32}, Case{32, 37, 37}, Case{16, 128, 5}, Case{1, 128, 128},
        Case{4, 128, 128}, Case{7, 128, 64}}) {
    for (int flags = 0; flags < 8; ++flags) {
      Bf16GemmShape s;
      s.m = c.m;
      s.n = c.n;
      s.k = c.k;
      s.a_transposed = (flags & 1) != 0;
      s.b_transposed = (flags & 2) != 0;
      s.accumulate = (flags & 4) != 0;
      // Leading dimensions wider than the rows, as the kernels' tiles are.
      s.lda = (s.a_transposed ? c.m : c.k) + 16;
      s.ldb = (s.b_transposed ? c.k : c.n) + 16;
      s.ldc = c.n + 8;
      SCOPED_TRACE(::testing::Message()
                   << c.m << "x" << c.n << "x" << c.k << " flags=" << flags);
      const std::vector<uint16_t> a =
          RandomBf16((s.a_transposed ? c.k : c.m) * s.lda, 1 + flags);
      const std::vector<uint16_t> b =
          RandomBf16((s.b_transposed ? c.n : c.k) * s.ldb, 2 + flags);
      std::vector<float> out(static_cast<size_t>(c.m * s.ldc), 0.5f);
      if (widened) {
        core::Bf16GemmWidened(s, a.data(), b.data(), out.data());
      } else {
        core::Bf16Gemm(s, a.data(), b.data(), out.data());
      }
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double want = s.accumulate ? 0.5 : 0.0, magnitude = 0.5;
          for (int64_t p = 0; p < c.k; ++p) {
            const double term = At(a, s.lda, s.a_transposed, i, p) *
                                At(b, s.ldb, s.b_transposed, p, j);
            want += term;
            magnitude += std::fabs(term);
          }
          // Products of bf16 values are exact in fp32; the sum is fp32.
          ASSERT_NEAR(out[static_cast<size_t>(i * s.ldc + j)], want,
                      magnitude * 0x1p-20)
              << "at " << i << "," << j;
        }
      }
    }
  }
}

TEST(Bf16GemmTest, MatchesFloat64InEveryOperandLayout) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  CheckProductsMatchFloat64(/*widened=*/false);
}

TEST(Bf16GemmTest, WidenedFallbackMatchesFloat64InEveryOperandLayout) {
  CheckProductsMatchFloat64(/*widened=*/true);
}

TEST(Bf16GemmTest, FewQueryRowsAreNotPaddedAndNoneExceedTheGranule) {
  EXPECT_EQ(core::RoundUpProductRows(1), 1);
  EXPECT_EQ(core::RoundUpProductRows(4), 4);
  EXPECT_EQ(core::RoundUpProductRows(31), 31);
  EXPECT_EQ(core::RoundUpProductRows(32), 32);
  EXPECT_EQ(core::RoundUpProductRows(33), 64);
  for (int64_t rows = 1; rows <= 300; ++rows) {
    EXPECT_GE(core::RoundUpProductRows(rows), rows);
    // Buffers padded with RoundUpToGranule hold these rows.
    EXPECT_LE(core::RoundUpProductRows(rows), core::RoundUpToGranule(rows));
  }
}

TEST(Bf16GemmTest, EveryThreadComputesTheSameBits) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  const Bf16GemmShape s{96, 128, 128, 128, 128, 128, false, true, false};
  const std::vector<uint16_t> a = RandomBf16(96 * 128, 5);
  const std::vector<uint16_t> b = RandomBf16(128 * 128, 6);
  std::vector<std::vector<float>> out(3, std::vector<float>(96 * 128));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < out.size(); ++t) {
    threads.emplace_back(
        [&, t] { core::Bf16Gemm(s, a.data(), b.data(), out[t].data()); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4), 0);
  EXPECT_EQ(std::memcmp(out[0].data(), out[2].data(), out[0].size() * 4), 0);
}

TEST(Bf16TilesTest, ToBf16PaddedRoundsToNearestEvenAndPadsWithZeros) {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  for (int64_t cols = 0; cols <= 70; cols += 7) {
    const int64_t rows = 5, rows_p = 16, cols_p = core::RoundUpToGranule(cols);
    const int64_t lds = 80, ldd = 96;
    std::vector<float> src(static_cast<size_t>(rows * lds));
    for (float& v : src) v = dist(gen);
    src[3] = std::numeric_limits<float>::infinity();
    std::vector<uint16_t> dst(static_cast<size_t>(rows_p * ldd), 0xffff);
    core::ToBf16Padded(src.data(), lds, rows, cols, dst.data(), ldd, rows_p,
                       cols_p);
    for (int64_t r = 0; r < rows_p; ++r) {
      for (int64_t c = 0; c < ldd; ++c) {
        const uint16_t got = dst[static_cast<size_t>(r * ldd + c)];
        if (c >= cols_p) {
          EXPECT_EQ(got, 0xffff)
              << "wrote past the padding at " << r << "," << c;
        } else if (r >= rows || c >= cols) {
          EXPECT_EQ(got, 0) << "padding at " << r << "," << c;
        } else {
          EXPECT_EQ(got,
                    core::FloatToBf16(src[static_cast<size_t>(r * lds + c)]))
              << r << "," << c;
        }
      }
    }
  }
}

TEST(Bf16TilesTest, TransposeBf16MovesEveryValueOfWholeAndPartialBlocks) {
  for (const int64_t rows : {16, 37, 128}) {
    for (const int64_t cols : {16, 40, 128}) {
      const int64_t lds = cols + 8, ldd = 136;
      const std::vector<uint16_t> src = RandomBf16(rows * lds, 10);
      std::vector<uint16_t> t(static_cast<size_t>(cols * ldd), 0xffff);
      core::TransposeBf16(src.data(), lds, rows, cols, t.data(), ldd, rows);
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < ldd; ++r) {
          ASSERT_EQ(t[static_cast<size_t>(c * ldd + r)],
                    r < rows ? src[static_cast<size_t>(r * lds + c)] : 0xffff)
              << rows << "x" << cols << " at " << r << "," << c;
        }
      }
    }
  }
}

TEST(Bf16TilesTest, TransposesMoveEveryValueAndPadTheColumns) {
  const int64_t rows = 37, cols = 40, rows_p = 48;
  const std::vector<uint16_t> src = RandomBf16(rows * cols, 9);
  std::vector<uint16_t> t(static_cast<size_t>(cols * 64), 0xffff);
  core::TransposeBf16(src.data(), cols, rows, cols, t.data(), 64, rows_p);
  std::vector<float> f(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < f.size(); ++i) f[i] = core::Bf16ToFloat(src[i]);
  std::vector<float> ft(static_cast<size_t>(cols * rows));
  core::TransposeScaled(f.data(), cols, rows, cols, 0.5f, ft.data(), rows);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows_p; ++r) {
      const uint16_t got = t[static_cast<size_t>(c * 64 + r)];
      EXPECT_EQ(got, r < rows ? src[static_cast<size_t>(r * cols + c)] : 0);
    }
    EXPECT_EQ(t[static_cast<size_t>(c * 64 + rows_p)], 0xffff);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(ft[static_cast<size_t>(c * rows + r)],
                0.5f * f[static_cast<size_t>(r * cols + c)]);
    }
  }
}

TEST(SoftmaxRowsTest, ExponentialMatchesStdExp) {
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> dist(-60.0f, 10.0f);
  for (int i = 0; i < 20000; ++i) {
    const float x = dist(gen), scale = 0.125f + static_cast<float>(i % 7);
    const float shift = 10.0f * scale;
    const double want = std::exp(static_cast<double>(x) * scale - shift);
    const float got = core::SoftmaxExp(x, scale, shift);
    if (want < 0x1p-125) continue;  // Flushed to 0 below 2^-126.
    // scale·log2(e) and shift·log2(e) are rounded to fp32 (relative 2^-24
    // each, as the fp32 path's scaled scores are), the polynomial adds
    // < 3e-7.
    const double arg_error =
        (std::fabs(static_cast<double>(x) * scale) + shift) * 0x1p-23;
    EXPECT_NEAR(got / want, 1.0, 3e-7 + arg_error) << "x=" << x;
  }
  EXPECT_EQ(core::SoftmaxExp(2.0f, 0.5f, 1.0f), 1.0f);
  EXPECT_EQ(core::SoftmaxExp(-INFINITY, 0.5f, 1.0f), 0.0f);
  EXPECT_EQ(core::SoftmaxExp(-INFINITY, 1.0f, -FLT_MAX), 0.0f);
  EXPECT_TRUE(std::isnan(core::SoftmaxExp(NAN, 1.0f, 0.0f)));
}

// The forward row against its definition in double precision, every length
// up to 40 (vector body and tails), with and without dropout.
TEST(SoftmaxRowsTest, ForwardRowMatchesItsDefinition) {
  std::mt19937 gen(12);
  std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
  std::bernoulli_distribution kept(0.7);
  for (int64_t n = 0; n <= 40; ++n) {
    for (bool drop : {false, true}) {
      std::vector<float> x(static_cast<size_t>(n));
      std::vector<uint8_t> keep(static_cast<size_t>(n));
      for (float& v : x) v = dist(gen);
      for (uint8_t& k : keep) k = kept(gen) ? 1 : 0;
      if (n > 2) x[1] = -INFINITY;
      const int64_t n_pad = core::RoundUpToGranule(n);
      std::vector<uint16_t> out(static_cast<size_t>(n_pad + 4), 0xffff);
      const float scale = 0.3f, shift = 2.0f, keep_scale = 1.25f;
      const float sum = core::SoftmaxRowToBf16(x.data(), n, scale, shift,
                                               drop ? keep.data() : nullptr,
                                               keep_scale, out.data(), n_pad);
      double want_sum = 0;
      for (int64_t c = 0; c < n; ++c) {
        const double p = std::exp(x[c] * 0.3 - 2.0);
        want_sum += p;
        const double dropped = drop ? p * keep[c] * 1.25 : p;
        // One bf16 rounding of a value within 3e-7 of `dropped`.
        EXPECT_NEAR(core::Bf16ToFloat(out[static_cast<size_t>(c)]), dropped,
                    dropped * (0x1p-8 + 1e-6))
            << "n=" << n << " c=" << c;
      }
      for (int64_t c = n; c < n_pad; ++c) EXPECT_EQ(out[c], 0);
      EXPECT_EQ(out[static_cast<size_t>(n_pad)], 0xffff);
      EXPECT_NEAR(sum, want_sum, want_sum * 1e-6 + 1e-30) << "n=" << n;
    }
  }
}

TEST(SoftmaxRowsTest, GradientRowMatchesItsDefinition) {
  std::mt19937 gen(13);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::bernoulli_distribution kept(0.7);
  for (int64_t n = 1; n <= 40; ++n) {
    for (bool drop : {false, true}) {
      std::vector<float> x(static_cast<size_t>(n)), dp(static_cast<size_t>(n));
      std::vector<uint8_t> keep(static_cast<size_t>(n));
      for (float& v : x) v = dist(gen);
      for (float& v : dp) v = dist(gen);
      for (uint8_t& k : keep) k = kept(gen) ? 1 : 0;
      const int64_t n_pad = core::RoundUpToGranule(n);
      std::vector<uint16_t> p_out(static_cast<size_t>(n_pad)),
          ds_out(static_cast<size_t>(n_pad));
      std::vector<float> ds32(static_cast<size_t>(n));
      const float scale = 0.5f, shift = 2.5f, inv_sum = 0.2f, rd = 0.3f;
      core::SoftmaxGradRowToBf16(x.data(), dp.data(), n, scale, shift, inv_sum,
                                 rd, drop ? keep.data() : nullptr, 2.0f,
                                 p_out.data(), ds_out.data(), ds32.data(),
                                 n_pad);
      for (int64_t c = 0; c < n; ++c) {
        const double p = std::exp(x[c] * 0.5 - 2.5) * 0.2;
        const double factor = drop ? keep[c] * 2.0 : 1.0;
        const double ds = p * (dp[c] * factor - 0.3);
        const double tol = 1e-6 * (std::fabs(ds) + p * (std::fabs(dp[c]) + 1));
        EXPECT_NEAR(ds32[static_cast<size_t>(c)], ds, tol) << n << "," << c;
        EXPECT_EQ(ds_out[static_cast<size_t>(c)],
                  core::FloatToBf16(ds32[static_cast<size_t>(c)]));
        EXPECT_NEAR(core::Bf16ToFloat(p_out[static_cast<size_t>(c)]),
                    p * factor, p * factor * (0x1p-8 + 1e-6));
      }
      for (int64_t c = n; c < n_pad; ++c) {
        EXPECT_EQ(p_out[static_cast<size_t>(c)], 0);
        EXPECT_EQ(ds_out[static_cast<size_t>(c)], 0);
      }
    }
  }
}

TEST(SoftmaxRowsTest, FullyMaskedRowGivesZerosNotNan) {
  std::vector<float> x(20, -INFINITY), dp(20, 1.0f);
  std::vector<uint16_t> p(32, 0xffff), ds(32, 0xffff);
  core::SoftmaxGradRowToBf16(x.data(), dp.data(), 20, 1.0f, -FLT_MAX,
                             1.0f / FLT_MAX, 0.0f, nullptr, 1.0f, p.data(),
                             ds.data(), dp.data(), 32);
  for (int c = 0; c < 32; ++c) {
    EXPECT_EQ(p[static_cast<size_t>(c)], 0);
    EXPECT_EQ(ds[static_cast<size_t>(c)], 0);
  }
  for (float v : dp) EXPECT_EQ(v, 0.0f);
}

CaseConfig Bf16Case() {
  CaseConfig c;
  c.layout = core::Layout::kBSND;
  c.dtype = DType::kBFloat16;
  c.dims = RefDims{2, 4, 2, 150, 200, 64, 64};
  c.mask = MaskKind::kPerBatch;
  c.seed = 77;
  return c;
}

TEST(TileProductsTest, PlansChooseBf16ForBfloat16WhereTheHostHasThem) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    CaseConfig config = Bf16Case();
    config.dtype = dtype;
    AttentionCase c(config);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan plan,
                              core::PlanForward(c.forward_args(), 2));
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan off,
                              core::PlanForward(c.forward_args(), 2, false));
    const bool bf16 = dtype == DType::kBFloat16 && Bf16Products().available;
    EXPECT_EQ(plan.tiling.products,
              bf16 ? TileProducts::kBFloat16 : TileProducts::kFloat32)
        << core::DTypeName(dtype) << " (" << Bf16Products().detail << ")";
    EXPECT_EQ(off.tiling.products, TileProducts::kFloat32);
  }
}

TEST(TileProductsTest, Bf16WorkspaceHoldsKeysAndValuesInBf16) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  core::ForwardArgs args;
  const std::vector<int64_t> shape = {1, 1, 8192, 128};
  core::HostTensor q = core::MakeHostTensor(DType::kBFloat16, shape);
  args.query = args.key = args.value = q.view();
  args.options.head_num = 1;
  args.options.input_layout = "BNSD";
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan bf16, core::PlanForward(args));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan fp32,
                            core::PlanForward(args, 1, false));
  // K and V of the head dominate: 8192 x 256 values, 4 MiB in bf16 against
  // 8 MiB widened.
  EXPECT_LT(bf16.workspace_bytes, fp32.workspace_bytes * 6 / 10);
  core::BackwardArgs grad;
  grad.query = grad.key = grad.value = grad.dy = q.view();
  grad.options = args.options;
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardPlan gb, core::PlanBackward(grad));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardPlan gf,
                            core::PlanBackward(grad, 1, false));
  EXPECT_LT(gb.workspace_bytes, gf.workspace_bytes);
}

TEST(TileProductsTest, BothProductsMatchTheReferenceWithDifferentRoundings) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  AttentionCase c(Bf16Case());
  const Tolerances tol = TolerancesFor(DType::kBFloat16);
  std::vector<core::ForwardResult> fwd;
  std::vector<core::BackwardResult> grad;
  for (bool allow : {true, false}) {
    SCOPED_TRACE(allow ? "bf16 products" : "fp32 products");
    core::EngineOptions options;
    options.intra_op_threads = 2;
    options.bf16_tile_products = allow;
    core::Engine engine(options);
    core::CancelToken token;
    ATTN_ASSERT_OK_AND_ASSIGN(
        core::ForwardCall fcall,
        core::ForwardCall::Prepare(c.forward_args(), 2, allow));
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult f, engine.Run(fcall, token));
    ExpectForwardMatches(c, f, tol);
    ATTN_ASSERT_OK_AND_ASSIGN(
        core::BackwardCall bcall,
        core::BackwardCall::Prepare(c.backward_args(&f), 2, allow));
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult g, engine.Run(bcall, token));
    ExpectBackwardMatches(c, g, tol);
    fwd.push_back(std::move(f));
    grad.push_back(std::move(g));
  }
  // P rounded to bf16 before P·V: the two paths round differently.
  EXPECT_NE(fwd[0].attention_out.bytes, fwd[1].attention_out.bytes);
  EXPECT_NE(grad[0].dq.bytes, grad[1].dq.bytes);
}

// Long enough for the fused backward to walk the kv head in several passes
// and the query tiles in two chunks (flash_backward.cc, KvPassRows): its
// bits must still be those of the split decomposition (2 threads on one kv
// head), whose items see one kv tile or one query tile each.
TEST(TileProductsTest, BackwardInKvPassesGivesTheSplitDecompositionsBits) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  CaseConfig config;
  config.layout = core::Layout::kBNSD;
  config.dtype = DType::kBFloat16;
  config.dims = RefDims{1, 2, 1, 2100, 1100, 128, 128};
  config.seed = 78;
  AttentionCase c(config);
  const core::BackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult fused, RunBackward(args, 1));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult split, RunBackward(args, 2));
  ExpectBackwardMatches(c, fused, TolerancesFor(DType::kBFloat16));
  EXPECT_TRUE(fused.dq.bytes == split.dq.bytes) << "dq differs";
  EXPECT_TRUE(fused.dk.bytes == split.dk.bytes) << "dk differs";
  EXPECT_TRUE(fused.dv.bytes == split.dv.bytes) << "dv differs";
}

TEST(TileProductsTest, EngineWithoutBf16ProductsRefusesABf16Plan) {
  SKIP_WITHOUT_BF16_PRODUCTS();
  AttentionCase c(Bf16Case());
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardCall call,
                            core::ForwardCall::Prepare(c.forward_args()));
  core::EngineOptions options;
  options.bf16_tile_products = false;
  core::Engine engine(options);
  core::CancelToken token;
  EXPECT_THAT(engine.Run(call, token),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("bf16_tile_products")));
}

TEST(TileProductsTest, BackendsNameTheBf16Products) {
  core::Engine on(core::EngineOptions{});
  core::EngineOptions off_options;
  off_options.bf16_tile_products = false;
  core::Engine off(off_options);
  const std::string want =
      Bf16Products().available
          ? "onednn-bf16-matmul:" + Bf16Products().detail
          : "onednn-bf16-matmul:off (" + Bf16Products().detail + ")";
  EXPECT_THAT(on.backends(), ::testing::Contains(want));
  EXPECT_THAT(
      off.backends(),
      ::testing::Contains("onednn-bf16-matmul:off (disabled by option)"));
}

}  // namespace
}  // namespace attnserve::test
