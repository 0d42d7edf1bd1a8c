// PlanForward / PlanBackward on valid requests: resolved dimensions, output
// specs, mask strides, tiling and the residual flag.
#include "attnserve/core/plan.h"

#include <string>
#include <vector>

#include "attnserve/core/prepared_call.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/plan_fixture.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::core::plan_testing::IsInvalidField;
using ::attnserve::core::plan_testing::kB;
using ::attnserve::core::plan_testing::kD;
using ::attnserve::core::plan_testing::kN1;
using ::attnserve::core::plan_testing::kN2;
using ::attnserve::core::plan_testing::kS1;
using ::attnserve::core::plan_testing::kS2;
using ::attnserve::core::plan_testing::PlanTest;
using ::attnserve::test::Bnsd;
using ::attnserve::test::IsOk;
using ::attnserve::test::LayoutShape;
using ::attnserve::test::StatusIs;
using ::testing::ElementsAre;

class PlanLayoutTest : public PlanTest,
                       public ::testing::WithParamInterface<Layout> {};

TEST_P(PlanLayoutTest, ResolvesDimensionsAndOutputs) {
  const Layout layout = GetParam();
  ForwardArgs args = ValidForward(layout);
  // Value head dim differs from the query/key head dim.
  args.value = Qkv(layout, kN2, kS2, 6);
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args, 2));
  const AttentionDims& d = plan.dims;
  EXPECT_EQ(d.layout, layout);
  EXPECT_EQ(d.dtype, DType::kFloat32);
  EXPECT_EQ(d.b, kB);
  EXPECT_EQ(d.n1, kN1);
  EXPECT_EQ(d.n2, kN2);
  EXPECT_EQ(d.g, kN1 / kN2);
  EXPECT_EQ(d.s1, kS1);
  EXPECT_EQ(d.s2, kS2);
  EXPECT_EQ(d.d, kD);
  EXPECT_EQ(d.dv, 6);
  EXPECT_FLOAT_EQ(plan.scale, 0.25f);
  EXPECT_GT(plan.tiling.tile_q, 0);
  EXPECT_GT(plan.tiling.tile_kv, 0);
  EXPECT_GE(plan.tiling.threads, 1);
  EXPECT_LE(plan.tiling.threads, 2);
  EXPECT_GT(plan.workspace_bytes, 0u);
  EXPECT_GT(plan.flops, 0);
  EXPECT_FALSE(plan.mask.has_tensor);
  ASSERT_EQ(plan.outputs.size(), 3u);
  EXPECT_EQ(plan.outputs[0].name, "attention_out");
  EXPECT_EQ(plan.outputs[0].dtype, DType::kFloat32);
  EXPECT_EQ(plan.outputs[0].shape, LayoutShape(layout, Bnsd{kB, kN1, kS1, 6}));
  EXPECT_EQ(plan.outputs[1].name, "softmax_max");
  EXPECT_EQ(plan.outputs[2].name, "softmax_sum");
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(plan.outputs[i].dtype, DType::kFloat32);
    EXPECT_THAT(plan.outputs[i].shape, ElementsAre(kB, kN1, kS1, 8));
  }
}

TEST_P(PlanLayoutTest, BackwardResolvesGradientShapes) {
  const Layout layout = GetParam();
  BackwardArgs args = ValidBackward(layout);
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardPlan plan, PlanBackward(args));
  EXPECT_TRUE(plan.has_residuals);
  EXPECT_EQ(plan.dims.n2, kN2);
  EXPECT_GT(plan.workspace_bytes, 0u);
  ASSERT_EQ(plan.outputs.size(), 3u);
  EXPECT_EQ(plan.outputs[0].name, "dq");
  EXPECT_EQ(plan.outputs[1].name, "dk");
  EXPECT_EQ(plan.outputs[2].name, "dv");
  EXPECT_EQ(plan.outputs[0].shape, args.query.shape);
  EXPECT_EQ(plan.outputs[1].shape, args.key.shape);
  EXPECT_EQ(plan.outputs[2].shape, args.value.shape);
  for (const OutputSpec& out : plan.outputs) {
    EXPECT_EQ(out.dtype, DType::kFloat32) << out.name;
  }
}

INSTANTIATE_TEST_SUITE_P(PaddedLayouts, PlanLayoutTest,
                         ::testing::Values(Layout::kBSH, Layout::kSBH,
                                           Layout::kBSND, Layout::kBNSD),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           return std::string(LayoutName(info.param));
                         });

// The thread policy counts the bytes a call's tensors hold as well as its
// FLOPs: a call that moves much memory for few FLOPs gets more threads.
TEST_F(PlanTest, ThreadsFollowTheBytesMovedWhenTheyAskForMore) {
  const ForwardArgs args = ValidForward();
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan by_flops,
                            PlanForward(args, ThreadPolicy(8, 1e15)));
  EXPECT_EQ(by_flops.tiling.threads, 1);
  const uint64_t in =
      args.query.size_bytes + args.key.size_bytes + args.value.size_bytes;
  const uint64_t out = OutputBytes(by_flops.outputs);
  // Three threads' worth of bytes (a little more than two).
  const double each = static_cast<double>(in + out) / 2.5;
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan by_bytes,
                            PlanForward(args, ThreadPolicy(8, 1e15, each)));
  EXPECT_EQ(by_bytes.tiling.threads, 3);
  // Capped by the policy's most, and FLOPs still count when they ask for
  // more.
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan capped,
                            PlanForward(args, ThreadPolicy(2, 1e15, each)));
  EXPECT_EQ(capped.tiling.threads, 2);
  ATTN_ASSERT_OK_AND_ASSIGN(
      ForwardPlan flops_win,
      PlanForward(args, ThreadPolicy(8, by_flops.flops / 4.5, 1e15)));
  EXPECT_EQ(flops_win.tiling.threads, 5);

  const BackwardArgs grad = ValidBackward();
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardPlan grad_flops,
                            PlanBackward(grad, ThreadPolicy(8, 1e15)));
  EXPECT_EQ(grad_flops.tiling.threads, 1);
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardPlan grad_bytes,
                            PlanBackward(grad, ThreadPolicy(8, 1e15, 1.0)));
  EXPECT_EQ(grad_bytes.tiling.threads, 8);
}

TEST_F(PlanTest, HalfPrecisionOutputsKeepTheInputDtype) {
  ForwardArgs args;
  args.query = Qkv(Layout::kBSND, kN1, kS1, kD, DType::kBFloat16);
  args.key = Qkv(Layout::kBSND, kN2, kS2, kD, DType::kBFloat16);
  args.value = Qkv(Layout::kBSND, kN2, kS2, kD, DType::kBFloat16);
  args.options.head_num = kN1;
  args.options.input_layout = "BSND";
  ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args));
  EXPECT_EQ(plan.dims.dtype, DType::kBFloat16);
  ASSERT_EQ(plan.outputs.size(), 3u);
  EXPECT_EQ(plan.outputs[0].dtype, DType::kBFloat16);
  EXPECT_EQ(plan.outputs[1].dtype, DType::kFloat32);
  EXPECT_EQ(plan.outputs[2].dtype, DType::kFloat32);
}

TEST_F(PlanTest, MaskStridesBroadcastSizeOneDimensions) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t stride_b, stride_n;
  };
  for (const Case& c :
       {Case{{kS1, kS2}, 0, 0}, Case{{1, 1, kS1, kS2}, 0, 0},
        Case{{kB, 1, kS1, kS2}, kS1 * kS2, 0},
        Case{{kB, kN1, kS1, kS2}, kN1 * kS1 * kS2, kS1 * kS2}}) {
    SCOPED_TRACE(::testing::PrintToString(c.shape));
    ForwardArgs args = ValidForward();
    args.options.atten_mask = Tensor(DType::kBool, c.shape);
    args.options.pre_tokens = 3;
    args.options.next_tokens = 1;
    ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args));
    EXPECT_TRUE(plan.mask.has_tensor);
    EXPECT_EQ(plan.mask.stride_n, c.stride_n);
    EXPECT_EQ(plan.mask.stride_i, kS2);
    EXPECT_EQ(plan.mask.stride_j, 1);
    ASSERT_EQ(plan.mask.bands.size(), static_cast<size_t>(kB));
    for (int64_t b = 0; b < kB; ++b) {
      const BatchBand& band = plan.mask.bands[static_cast<size_t>(b)];
      EXPECT_EQ(band.mask_base, b * c.stride_b);
      EXPECT_EQ(band.lo, -3);
      EXPECT_EQ(band.hi, 1);
    }
  }
}

TEST_F(PlanTest, Uint8MaskIsAccepted) {
  ForwardArgs args = ValidForward();
  args.options.atten_mask = Tensor(DType::kUInt8, {kS1, kS2});
  EXPECT_THAT(PlanForward(args), IsOk());
}

TEST_F(PlanTest, BackwardWithoutResidualsPlansARecompute) {
  const BackwardArgs args = ValidBackward(Layout::kBNSD, /*residuals=*/false);
  absl::StatusOr<BackwardPlan> plan = PlanBackward(args);
  // Either supported (the plan says it recomputes) or refused as not yet
  // implemented; never a bogus INVALID_ARGUMENT.
  if (plan.ok()) {
    EXPECT_FALSE(plan->has_residuals);
  } else {
    ADD_FAILURE() << plan.status();
  }
}

TEST_F(PlanTest, ParsesLayoutNames) {
  for (Layout layout : {Layout::kBSH, Layout::kSBH, Layout::kBSND,
                        Layout::kBNSD, Layout::kTND}) {
    ATTN_ASSERT_OK_AND_ASSIGN(Layout parsed,
                              ParseLayout(std::string(LayoutName(layout))));
    EXPECT_EQ(parsed, layout);
  }
  EXPECT_TRUE(IsInvalidField(ParseLayout("BHSD").status(), "input_layout"));
}

}  // namespace
}  // namespace attnserve::core
