// NsaSelectedAttentionGrad against the float64 reference: dq, and dk/dv
// scatter-added to the original key rows (blocks read by many tokens, by
// several heads, and twice by one token), varlen batches, GQA with D != Dv,
// causal mode 2, and the same bits for 1, 2 and 3 threads.
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/nsa.h"
#include "gtest/gtest.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;

struct GridPoint {
  DType dtype;
  int64_t sparse_mode;
  NsaIndexPattern pattern;
};

void PrintTo(const GridPoint& p, std::ostream* os) {
  *os << core::DTypeName(p.dtype) << " sparse_mode " << p.sparse_mode << " "
      << NsaIndexPatternName(p.pattern);
}

std::vector<GridPoint> Grid() {
  std::vector<GridPoint> points;
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int64_t mode : {0, 2}) {
      for (NsaIndexPattern pattern :
           {NsaIndexPattern::kDistinct, NsaIndexPattern::kDuplicates,
            NsaIndexPattern::kLocal}) {
        points.push_back({dtype, mode, pattern});
      }
    }
  }
  return points;
}

class NsaBackwardGridTest : public ::testing::TestWithParam<GridPoint> {};

// The kernel's own forward supplies attention_out and the statistics.
TEST_P(NsaBackwardGridTest, MatchesGatheringReference) {
  NsaCaseConfig config;
  config.dtype = GetParam().dtype;
  config.sparse_mode = GetParam().sparse_mode;
  config.pattern = GetParam().pattern;
  config.seed = 21;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunNsaForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                            RunNsaBackward(c.backward_args(fwd), 2));
  ExpectNsaBackwardMatches(c, got, TolerancesFor(config.dtype));
}

INSTANTIATE_TEST_SUITE_P(Grid, NsaBackwardGridTest, ::testing::ValuesIn(Grid()),
                         [](const ::testing::TestParamInfo<GridPoint>& info) {
                           return absl::StrCat(
                               core::DTypeName(info.param.dtype), "_mode",
                               info.param.sparse_mode, "_",
                               NsaIndexPatternName(info.param.pattern));
                         });

class NsaBackwardDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(NsaBackwardDtypeTest, LargeGroupWithValueDimSmallerThanKeyDim) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {90, 110};
  config.seq_kv = {128, 256};
  config.n1 = 16;
  config.n2 = 1;
  config.d = 192;
  config.dv = 128;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 22;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardResult got,
      RunNsaBackward(c.backward_args_with_reference_residuals(), 2));
  EXPECT_EQ(got.dq.shape, (std::vector<int64_t>{200, 16, 192}));
  EXPECT_EQ(got.dk.shape, (std::vector<int64_t>{384, 1, 192}));
  EXPECT_EQ(got.dv.shape, (std::vector<int64_t>{384, 1, 128}));
  ExpectNsaBackwardMatches(c, got, TolerancesFor(config.dtype));
}

// G = 32 (the largest group): tiles shrink to 16 tokens so that a tile's
// products keep at most 512 rows.
TEST_P(NsaBackwardDtypeTest, GroupOf32QueryHeadsPerKvHead) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {45, 30};
  config.seq_kv = {128, 96};
  config.n1 = 32;
  config.n2 = 1;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 26;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaForwardPlan plan,
                            core::PlanNsaForward(c.forward_args()));
  EXPECT_EQ(plan.token_tile, 16);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunNsaForward(c.forward_args(), 2));
  ExpectNsaForwardMatches(c, fwd, TolerancesFor(config.dtype));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                            RunNsaBackward(c.backward_args(fwd), 2));
  ExpectNsaBackwardMatches(c, got, TolerancesFor(config.dtype));
}

// Every token and head reads the same K blocks: each of their keys gets the
// sum of hundreds of contributions, the other keys none.
TEST_P(NsaBackwardDtypeTest, BlockSelectedByManyTokensAccumulates) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {120, 80};
  config.seq_kv = {128, 128};
  config.pattern = NsaIndexPattern::kShared;
  config.seed = 23;
  NsaCase c(config);
  const NsaRefBackward& ref = c.reference_backward();
  int64_t shared_keys = 0;
  for (int64_t uses : ref.key_uses) shared_keys += uses >= 100 ? 1 : 0;
  ASSERT_GT(shared_keys, 0) << "the case must read some key many times";
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardResult got,
      RunNsaBackward(c.backward_args_with_reference_residuals(), 3));
  ExpectNsaBackwardMatches(c, got, TolerancesFor(config.dtype));
}

// One block named three times by every token (slots 0, 1 and K-1).
TEST_P(NsaBackwardDtypeTest, DuplicatedIndicesAddEveryTime) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {100};
  config.seq_kv = {160};
  config.n1 = 4;
  config.n2 = 4;
  config.block_count = 5;
  config.pattern = NsaIndexPattern::kDuplicates;
  config.seed = 24;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fwd,
                            RunNsaForward(c.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got,
                            RunNsaBackward(c.backward_args(fwd)));
  ExpectNsaBackwardMatches(c, got, TolerancesFor(config.dtype));
}

// dK/dV sums are split in chunks of tokens fixed by the shapes; any number
// of workers must give the same bits.
TEST_P(NsaBackwardDtypeTest, SameBitsForAnyThreadCount) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {300};
  config.seq_kv = {256};
  config.n1 = 4;
  config.n2 = 1;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 25;
  NsaCase c(config);
  const core::NsaBackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaBackwardPlan plan1,
                            core::PlanNsaBackward(args, 1));
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaBackwardPlan plan3,
                            core::PlanNsaBackward(args, 3));
  EXPECT_EQ(plan1.chunk_tokens, plan3.chunk_tokens);
  EXPECT_LT(plan1.chunk_tokens, 300) << "the case must use several chunks";
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult one, RunNsaBackward(args, 1));
  ExpectNsaBackwardMatches(c, one, TolerancesFor(config.dtype));
  for (int threads : {2, 3}) {
    SCOPED_TRACE(threads);
    ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult many,
                              RunNsaBackward(args, threads));
    EXPECT_TRUE(many.dq.bytes == one.dq.bytes) << "dq differs";
    EXPECT_TRUE(many.dk.bytes == one.dk.bytes) << "dk differs";
    EXPECT_TRUE(many.dv.bytes == one.dv.bytes) << "dv differs";
  }
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, NsaBackwardDtypeTest, ComputeDTypes(),
                         DTypeParamName);

TEST(NsaBackwardTest, ReportsPlanFiguresAndStopsWhenCancelled) {
  NsaCaseConfig config;
  NsaCase c(config);
  const core::NsaBackwardArgs args = c.backward_args_with_reference_residuals();
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaBackwardCall call,
                            core::NsaBackwardCall::Prepare(args, 2));
  const core::NsaBackwardPlan& plan = call.plan();
  core::EngineOptions options;
  options.intra_op_threads = 2;
  core::Engine engine(options);
  core::CancelToken token;
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult got, engine.Run(call, token));
  EXPECT_EQ(got.stats.flops, plan.flops);
  EXPECT_EQ(got.stats.workspace_bytes, plan.workspace_bytes);
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
  token.Cancel();
  EXPECT_THAT(engine.Run(call, token), StatusIs(absl::StatusCode::kCancelled));
  core::CancelToken expired(absl::Now() - absl::Seconds(1));
  EXPECT_THAT(engine.Run(call, expired),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

// A deadline that passes while the kernel runs stops it between tokens.
TEST(NsaBackwardTest, DeadlinePassingDuringTheRunStopsIt) {
  const int64_t t = 8192, skv = 1024;
  const core::HostTensor q =
      core::MakeHostTensor(DType::kBFloat16, {t, 16, 128});
  const core::HostTensor kv =
      core::MakeHostTensor(DType::kBFloat16, {skv, 1, 128});
  const core::HostTensor stat =
      core::MakeHostTensor(DType::kFloat32, {t, 16, 8});
  core::HostTensor sums = core::MakeHostTensor(DType::kFloat32, {t, 16, 8});
  for (size_t i = 0; i < sums.bytes.size(); i += sizeof(float)) {
    const float one = 1.0f;  // Sums must be positive and finite.
    std::memcpy(&sums.bytes[i], &one, sizeof(one));
  }
  const core::HostTensor topk = core::MakeHostTensor(DType::kInt32, {t, 1, 16});
  core::NsaBackwardArgs args;
  args.query = q.view();
  args.key = kv.view();
  args.value = kv.view();
  args.attention_out = q.view();
  args.attention_out_grad = q.view();
  args.softmax_max = stat.view();
  args.softmax_sum = sums.view();
  args.topk_indices = topk.view();
  args.options.actual_seq_qlen = {t};
  args.options.actual_seq_kvlen = {skv};
  args.options.selected_block_size = 64;
  args.options.selected_block_count = 16;
  args.options.head_num = 16;
  args.options.input_layout = "TND";
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaBackwardCall call,
                            core::NsaBackwardCall::Prepare(args));
  const core::NsaBackwardPlan& plan = call.plan();
  ASSERT_GT(plan.flops, 1e11);
  core::Engine engine(core::EngineOptions{});
  const absl::Time start = absl::Now();
  core::CancelToken token(start + absl::Milliseconds(5));
  EXPECT_THAT(engine.Run(call, token),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1500));
}

}  // namespace
}  // namespace attnserve::test
