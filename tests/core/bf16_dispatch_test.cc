// The choice of tile products follows oneDNN's instruction set, which
// ONEDNN_MAX_CPU_ISA can lower: ctest runs this binary once per forced ISA
// (tests/core/CMakeLists.txt), so that the fallback to fp32 products and
// the AVX-512 BF16 (non-AMX) products are tested on a host that has more.
// Without the variable set the tests skip, saying so.
#include <cstdlib>
#include <string>

#include "attnserve/core/plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/bf16_gemm.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::Bf16Products;
using core::DType;
using core::TileProducts;
using ::testing::HasSubstr;

std::string ForcedIsa() {
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  return isa == nullptr ? "" : isa;
}

bool IsaBelowBf16(const std::string& isa) {
  return isa == "SSE41" || isa == "AVX" || isa == "AVX2" ||
         isa == "AVX2_VNNI" || isa == "AVX512_CORE" ||
         isa == "AVX512_CORE_VNNI";
}

CaseConfig Bf16Case() {
  CaseConfig c;
  c.layout = core::Layout::kBNSD;
  c.dtype = DType::kBFloat16;
  c.dims = RefDims{2, 4, 2, 150, 131, 64, 48};
  c.mask = MaskKind::kShared;
  c.seed = 91;
  return c;
}

TEST(Bf16DispatchTest, ProductsFollowTheForcedIsa) {
  const std::string isa = ForcedIsa();
  if (isa.empty()) {
    GTEST_SKIP() << "ONEDNN_MAX_CPU_ISA is not set (ctest runs this with "
                    "forced ISAs)";
  }
  AttentionCase c(Bf16Case());
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardPlan plan,
                            core::PlanForward(c.forward_args(), 2));
  if (IsaBelowBf16(isa)) {
    EXPECT_FALSE(Bf16Products().available) << Bf16Products().detail;
    EXPECT_THAT(Bf16Products().detail, HasSubstr("avx512_core_bf16"));
    EXPECT_EQ(plan.tiling.products, TileProducts::kFloat32);
  } else if (isa == "AVX512_CORE_BF16") {
    if (!__builtin_cpu_supports("avx512bf16")) {
      GTEST_SKIP() << "this CPU has no AVX-512 BF16";
    }
    ASSERT_TRUE(Bf16Products().available) << Bf16Products().detail;
    // Not AMX: the products of hosts with AVX-512 BF16 alone.
    EXPECT_THAT(Bf16Products().detail, HasSubstr("avx512_core_bf16"));
    EXPECT_EQ(plan.tiling.products, TileProducts::kBFloat16);
  } else {
    GTEST_SKIP() << "no expectation for ONEDNN_MAX_CPU_ISA=" << isa;
  }
}

// Whatever the products, a BFLOAT16 request gets the reference's answer
// within the bf16 tolerances, on 1 and 3 threads with the same bits.
TEST(Bf16DispatchTest, Bfloat16MatchesTheReferenceWithTheChosenProducts) {
  SCOPED_TRACE("ONEDNN_MAX_CPU_ISA=" + ForcedIsa() + ", bf16 products: " +
               (Bf16Products().available ? Bf16Products().detail : "none"));
  AttentionCase c(Bf16Case());
  const Tolerances tol = TolerancesFor(DType::kBFloat16);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunForward(c.forward_args(), 1));
  ExpectForwardMatches(c, fwd, tol);
  const core::BackwardArgs bargs = c.backward_args(&fwd);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult one, RunBackward(bargs, 1));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult three, RunBackward(bargs, 3));
  ExpectBackwardMatches(c, one, tol);
  EXPECT_EQ(one.dq.bytes, three.dq.bytes);
  EXPECT_EQ(one.dk.bytes, three.dk.bytes);
  EXPECT_EQ(one.dv.bytes, three.dv.bytes);
}

}  // namespace
}  // namespace attnserve::test
