// NsaSelectedAttention (forward) against the float64 reference that gathers
// the selected blocks explicitly: dtypes x sparse modes x index patterns on
// varlen batches, GQA with D != Dv, causal cuts inside the query's own
// block, duplicated indices, and thread-count independence.
#include <cfloat>
#include <cmath>
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
#include "tests/testing/tensors.h"

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

std::string GridPointName(const ::testing::TestParamInfo<GridPoint>& info) {
  return absl::StrCat(core::DTypeName(info.param.dtype), "_mode",
                      info.param.sparse_mode, "_",
                      NsaIndexPatternName(info.param.pattern));
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

class NsaForwardGridTest : public ::testing::TestWithParam<GridPoint> {};

// Three batches (one without queries), GQA G=2, D=Dv=128, bs=16, K=4.
TEST_P(NsaForwardGridTest, MatchesGatheringReference) {
  NsaCaseConfig config;
  config.dtype = GetParam().dtype;
  config.sparse_mode = GetParam().sparse_mode;
  config.pattern = GetParam().pattern;
  config.seed = 11;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunNsaForward(c.forward_args()));
  ExpectNsaForwardMatches(c, got, TolerancesFor(config.dtype));
}

INSTANTIATE_TEST_SUITE_P(Grid, NsaForwardGridTest, ::testing::ValuesIn(Grid()),
                         GridPointName);

class NsaForwardDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(NsaForwardDtypeTest, LargeGroupWithValueDimSmallerThanKeyDim) {
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
  config.seed = 12;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunNsaForward(c.forward_args(), 2));
  EXPECT_EQ(got.attention_out.shape, (std::vector<int64_t>{200, 16, 128}));
  ExpectNsaForwardMatches(c, got, TolerancesFor(config.dtype));
}

TEST_P(NsaForwardDtypeTest, HeadDim192ForKeysAndValues) {
  NsaCaseConfig config;
  config.dtype = GetParam();
  config.seq_q = {64};
  config.seq_kv = {96};
  config.n1 = 2;
  config.n2 = 2;
  config.d = 192;
  config.dv = 192;
  config.block_size = 32;
  config.block_count = 3;
  config.seed = 13;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got,
                            RunNsaForward(c.forward_args()));
  ExpectNsaForwardMatches(c, got, TolerancesFor(config.dtype));
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, NsaForwardDtypeTest, ComputeDTypes(),
                         DTypeParamName);

// A token whose K indices all name the same block attends that block K
// times: the probabilities are those of the block alone (the copies cancel
// in the normalization), and softmax_sum is K times the block's sum.
TEST(NsaForwardTest, RepeatedBlockCountsEveryTime) {
  NsaCaseConfig config;
  config.seq_q = {40};
  config.seq_kv = {128};
  config.n1 = 2;
  config.n2 = 1;
  config.pattern = NsaIndexPattern::kShared;
  config.seed = 14;
  NsaCase c(config);
  // Rebuild topk: every slot names block 5.
  std::vector<int32_t> same(static_cast<size_t>(40 * 1 * 4), 5);
  const core::HostTensor topk = PackInt32(same, {40, 1, 4});
  core::NsaForwardArgs args = c.forward_args();
  args.topk_indices = topk.view();
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, RunNsaForward(args));
  const NsaRefProblem& p = c.problem();
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> out,
      UnpackFlat(got.attention_out, {40, 2, 128}, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> sums,
      UnpackFlat(got.softmax_sum, {40, 2, 8}, DType::kFloat32));
  for (int64_t t = 0; t < 40; ++t) {
    for (int64_t n = 0; n < 2; ++n) {
      // Dense attention over keys 80..95 in double.
      double s[16], m = -INFINITY, l = 0;
      for (int r = 0; r < 16; ++r) {
        double qk = 0;
        for (int d = 0; d < 128; ++d) {
          qk += p.q[static_cast<size_t>((t * 2 + n) * 128 + d)] *
                p.k[static_cast<size_t>((80 + r) * 128 + d)];
        }
        s[r] = c.scale() * qk;
        m = std::max(m, s[r]);
      }
      for (double x : s) l += std::exp(x - m);
      EXPECT_NEAR(sums[static_cast<size_t>((t * 2 + n) * 8)], 4 * l,
                  4 * l * 1e-5);
      for (int d = 0; d < 128; d += 17) {
        double want = 0;
        for (int r = 0; r < 16; ++r) {
          want += std::exp(s[r] - m) / l *
                  p.v[static_cast<size_t>((80 + r) * 128 + d)];
        }
        EXPECT_NEAR(out[static_cast<size_t>((t * 2 + n) * 128 + d)], want,
                    1e-5);
      }
    }
  }
}

// sparse_mode 2 keeps, inside the block holding the query position i, the
// keys at positions <= i: the query at position i = 37 of a block of 16
// sees keys 32..37 of that block and nothing of a block after it.
TEST(NsaForwardTest, CausalModeCutsTheBlockHoldingTheQuery) {
  NsaCaseConfig config;
  config.seq_q = {48};
  config.seq_kv = {128};
  config.n1 = 1;
  config.n2 = 1;
  config.sparse_mode = 2;
  config.seed = 15;
  NsaCase c(config);
  // Token 37 selects its own block (2), blocks 0 and 1, and block 6 (after).
  std::vector<int32_t> topk(static_cast<size_t>(48 * 4));
  for (size_t t = 0; t < 48; ++t) {
    const int32_t own = static_cast<int32_t>(t / 16);
    topk[t * 4 + 0] = 6;
    topk[t * 4 + 1] = own;
    topk[t * 4 + 2] = 0;
    topk[t * 4 + 3] = 1;
  }
  const core::HostTensor tensor = PackInt32(topk, {48, 1, 4});
  core::NsaForwardArgs args = c.forward_args();
  args.topk_indices = tensor.view();
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, RunNsaForward(args));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> out,
      UnpackFlat(got.attention_out, {48, 1, 128}, DType::kFloat32));
  const NsaRefProblem& p = c.problem();
  // Keys kept for token 37: 32..37, then 0..15, then 16..31 (block 6 and
  // 38..47 masked).
  std::vector<int64_t> keys;
  for (int64_t j = 32; j <= 37; ++j) keys.push_back(j);
  for (int64_t j = 0; j < 32; ++j) keys.push_back(j);
  const int64_t t = 37;
  std::vector<double> s;
  double m = -INFINITY, l = 0;
  for (int64_t j : keys) {
    double qk = 0;
    for (int d = 0; d < 128; ++d) {
      qk += p.q[static_cast<size_t>(t * 128 + d)] *
            p.k[static_cast<size_t>(j * 128 + d)];
    }
    s.push_back(c.scale() * qk);
    m = std::max(m, s.back());
  }
  for (double x : s) l += std::exp(x - m);
  for (int d = 0; d < 128; ++d) {
    double want = 0;
    for (size_t r = 0; r < keys.size(); ++r) {
      want +=
          std::exp(s[r] - m) / l * p.v[static_cast<size_t>(keys[r] * 128 + d)];
    }
    EXPECT_NEAR(out[static_cast<size_t>(t * 128 + d)], want, 1e-5) << d;
  }
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> maxes,
      UnpackFlat(got.softmax_max, {48, 1, 8}, DType::kFloat32));
  EXPECT_NEAR(maxes[static_cast<size_t>(t * 8)], m, 1e-5);
}

// A query whose selected blocks all lie after its position attends nothing:
// the invalid-line result of the FlashAttention convention.
TEST(NsaForwardTest, QuerySeeingNoKeyGivesTheInvalidLineResult) {
  NsaCaseConfig config;
  config.seq_q = {16};
  config.seq_kv = {128};
  config.n1 = 2;
  config.n2 = 1;
  config.sparse_mode = 2;
  NsaCase c(config);
  std::vector<int32_t> topk(16 * 4);
  for (size_t i = 0; i < topk.size(); ++i) topk[i] = 1 + i % 4;  // Blocks 1-4.
  const core::HostTensor tensor = PackInt32(topk, {16, 1, 4});
  core::NsaForwardArgs args = c.forward_args();
  args.topk_indices = tensor.view();
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaForwardPlan plan,
                            core::PlanNsaForward(args));
  EXPECT_EQ(plan.attended, 0);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, RunNsaForward(args));
  EXPECT_EQ(got.stats.tiles_computed, 0);
  EXPECT_EQ(got.stats.tiles_skipped, 16);
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> out,
      UnpackFlat(got.attention_out, {16, 2, 128}, DType::kFloat32));
  for (double x : out) ASSERT_EQ(x, 0.0);
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> maxes,
      UnpackFlat(got.softmax_max, {16, 2, 8}, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> sums,
      UnpackFlat(got.softmax_sum, {16, 2, 8}, DType::kFloat32));
  for (double x : maxes) ASSERT_EQ(x, -static_cast<double>(FLT_MAX));
  for (double x : sums) ASSERT_EQ(x, static_cast<double>(FLT_MAX));
}

// The NPU turns the causal rule on only when a mask is sent; attnserve
// applies it for sparse_mode 2 alone, and the standard mask changes nothing.
TEST(NsaForwardTest, CausalMaskTensorIsOptionalInModeTwo) {
  NsaCaseConfig config;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 16;
  NsaCase without(config);
  config.send_mask = true;
  NsaCase with(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult a,
                            RunNsaForward(without.forward_args()));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult b,
                            RunNsaForward(with.forward_args()));
  ExpectNsaForwardMatches(without, a, TolerancesFor(DType::kFloat32));
  EXPECT_TRUE(a.attention_out.bytes == b.attention_out.bytes);
  EXPECT_TRUE(a.softmax_max.bytes == b.softmax_max.bytes);
}

TEST(NsaForwardTest, SameBitsForAnyThreadCount) {
  NsaCaseConfig config;
  config.dtype = DType::kBFloat16;
  config.seq_q = {150, 170};
  config.seq_kv = {192, 256};
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult one,
                            RunNsaForward(c.forward_args(), 1));
  for (int threads : {2, 3}) {
    SCOPED_TRACE(threads);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult many,
                              RunNsaForward(c.forward_args(), threads));
    EXPECT_TRUE(many.attention_out.bytes == one.attention_out.bytes);
    EXPECT_TRUE(many.softmax_max.bytes == one.softmax_max.bytes);
    EXPECT_TRUE(many.softmax_sum.bytes == one.softmax_sum.bytes);
  }
}

TEST(NsaForwardTest, ReportsPlanFiguresAndStopsWhenCancelled) {
  NsaCaseConfig config;
  NsaCase c(config);
  const core::NsaForwardArgs args = c.forward_args();
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaForwardCall call,
                            core::NsaForwardCall::Prepare(args, 2));
  const core::NsaForwardPlan& plan = call.plan();
  core::EngineOptions options;
  options.intra_op_threads = 2;
  core::Engine engine(options);
  core::CancelToken token;
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, engine.Run(call, token));
  EXPECT_EQ(got.stats.flops, plan.flops);
  EXPECT_EQ(got.stats.workspace_bytes, plan.workspace_bytes);
  EXPECT_EQ(got.stats.tiles_computed, c.t1() * config.n2);
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
  token.Cancel();
  EXPECT_THAT(engine.Run(call, token), StatusIs(absl::StatusCode::kCancelled));
  core::EngineOptions small;
  small.workspace_budget_bytes = plan.workspace_bytes - 1;
  core::Engine tight(small);
  core::CancelToken fresh;
  EXPECT_THAT(tight.Run(call, fresh),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

// A deadline that passes while the kernel runs stops it between work items:
// the full run would take seconds.
TEST(NsaForwardTest, DeadlinePassingDuringTheRunStopsIt) {
  const int64_t t = 8192, skv = 1024;
  const core::HostTensor q =
      core::MakeHostTensor(DType::kBFloat16, {t, 16, 128});
  const core::HostTensor kv =
      core::MakeHostTensor(DType::kBFloat16, {skv, 1, 128});
  const core::HostTensor topk = core::MakeHostTensor(DType::kInt32, {t, 1, 16});
  core::NsaForwardArgs args;
  args.query = q.view();
  args.key = kv.view();
  args.value = kv.view();
  args.topk_indices = topk.view();
  args.options.actual_seq_qlen = {t};
  args.options.actual_seq_kvlen = {skv};
  args.options.selected_block_size = 64;
  args.options.selected_block_count = 16;
  args.options.head_num = 16;
  args.options.input_layout = "TND";
  ATTN_ASSERT_OK_AND_ASSIGN(core::NsaForwardCall call,
                            core::NsaForwardCall::Prepare(args));
  const core::NsaForwardPlan& plan = call.plan();
  ASSERT_GT(plan.flops, 6e10);
  core::Engine engine(core::EngineOptions{});
  const absl::Time start = absl::Now();
  core::CancelToken token(start + absl::Milliseconds(5));
  EXPECT_THAT(engine.Run(call, token),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1500));
}

}  // namespace
}  // namespace attnserve::test
