// Engine: concurrent runs on one engine, intra-op threads, and the
// workspace budget.
#include "attnserve/core/engine.h"

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

CaseConfig Config(int i) {
  CaseConfig c;
  c.layout = i % 2 == 0 ? Layout::kBSH : Layout::kBNSD;
  c.dtype = i % 3 == 0 ? DType::kFloat16 : DType::kFloat32;
  c.dims = RefDims{2, 4, 2, 70 + i, 90 - i, 32, 32};
  c.mask = i % 2 == 0 ? MaskKind::kPerHead : MaskKind::kNone;
  c.seed = 300 + static_cast<uint64_t>(i);
  return c;
}

TEST(EngineTest, ConcurrentRunsOnOneEngineMatchTheReference) {
  core::EngineOptions options;
  options.intra_op_threads = 2;
  core::Engine engine(options);
  ASSERT_EQ(engine.intra_op_threads(), 2);
  constexpr int kCallers = 4;
  std::vector<std::unique_ptr<AttentionCase>> cases;
  for (int i = 0; i < kCallers; ++i) {
    cases.push_back(std::make_unique<AttentionCase>(Config(i)));
  }
  std::vector<absl::StatusOr<core::ForwardResult>> fwd(kCallers);
  std::vector<absl::StatusOr<core::BackwardResult>> grad(kCallers);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&, i] {
      const AttentionCase& c = *cases[static_cast<size_t>(i)];
      for (int round = 0; round < 3; ++round) {
        absl::StatusOr<core::ForwardCall> call = core::ForwardCall::Prepare(
            c.forward_args(), engine.intra_op_threads());
        if (!call.ok()) {
          fwd[i] = call.status();
          return;
        }
        core::CancelToken token;
        fwd[i] = engine.Run(*call, token);
        if (!fwd[i].ok()) return;
        absl::StatusOr<core::BackwardCall> grad_call =
            core::BackwardCall::Prepare(c.backward_args(&*fwd[i]),
                                        engine.intra_op_threads());
        if (!grad_call.ok()) {
          grad[i] = grad_call.status();
          return;
        }
        grad[i] = engine.Run(*grad_call, token);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int i = 0; i < kCallers; ++i) {
    const AttentionCase& c = *cases[static_cast<size_t>(i)];
    SCOPED_TRACE(CaseName(c.config()));
    ASSERT_THAT(fwd[i], IsOk());
    ASSERT_THAT(grad[i], IsOk());
    ExpectForwardMatches(c, *fwd[i], TolerancesFor(c.config().dtype));
    ExpectBackwardMatches(c, *grad[i], TolerancesFor(c.config().dtype));
  }
  EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
}

TEST(EngineTest, WorkspaceOverBudgetIsResourceExhausted) {
  AttentionCase c(Config(1));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardCall call,
                            core::ForwardCall::Prepare(c.forward_args()));
  ASSERT_GT(call.workspace_bytes(), 1u);
  core::EngineOptions options;
  options.workspace_budget_bytes = call.workspace_bytes() - 1;
  core::Engine small(options);
  core::CancelToken token;
  EXPECT_THAT(small.Run(call, token),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // The call's own figure is enough.
  options.workspace_budget_bytes = call.workspace_bytes();
  core::Engine exact(options);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, exact.Run(call, token));
  ExpectForwardMatches(c, got, TolerancesFor(c.config().dtype));
  EXPECT_EQ(got.stats.workspace_bytes, call.workspace_bytes());
}

TEST(EngineTest, BackwardWorkspaceOverBudgetIsResourceExhausted) {
  AttentionCase c(Config(2));
  ATTN_ASSERT_OK_AND_ASSIGN(
      core::BackwardCall call,
      core::BackwardCall::Prepare(c.backward_args_with_reference_residuals()));
  core::EngineOptions options;
  options.workspace_budget_bytes = call.workspace_bytes() / 2;
  core::Engine small(options);
  core::CancelToken token;
  EXPECT_THAT(small.Run(call, token),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

// The forward's outputs come from the engine's pool without being cleared:
// on blocks that held 0xff bytes (NaN) the results are the same bits as on
// a fresh engine, so every element is written. Cases: the tiled path with
// fully masked rows and Dv < D, the stacked path (G * Sq <= tile_q), and
// TND with a batch without queries and one without keys.
TEST(EngineTest, ForwardWritesEveryOutputElementOfReusedBuffers) {
  std::vector<FeatureConfig> configs;
  {
    FeatureConfig c;
    c.layout = Layout::kSBH;
    c.dtype = DType::kFloat16;
    c.n1 = 4;
    c.n2 = 2;
    c.s1 = 300;
    c.s2 = 70;
    c.dv = 24;
    c.mask = MaskForm::kPerHead;
    c.fully_masked_rows = 2;
    configs.push_back(c);
  }
  {
    FeatureConfig c;
    c.layout = Layout::kBSH;
    c.dtype = DType::kBFloat16;
    c.n1 = 8;
    c.n2 = 2;
    c.s1 = 3;
    c.s2 = 200;
    c.sparse_mode = 3;
    c.mask = MaskForm::kCompressed;
    configs.push_back(c);
  }
  {
    FeatureConfig c;
    c.layout = Layout::kTND;
    c.dtype = DType::kFloat32;
    c.n1 = 6;
    c.n2 = 2;
    c.dv = 24;
    c.seq_q = {17, 0, 29, 11, 6};
    c.seq_kv = {23, 14, 19, 0, 6};
    configs.push_back(c);
  }
  for (const FeatureConfig& config : configs) {
    SCOPED_TRACE(FeatureCaseName(config));
    FeatureCase c(config);
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult fresh,
                              RunForward(c.forward_args(), 2));
    core::EngineOptions options;
    options.intra_op_threads = 2;
    core::BufferPoolOptions pooled;
    pooled.min_pooled_bytes = 1;  // Pool even these small outputs.
    core::Engine engine(options, pooled);
    {
      std::vector<core::Buffer> dirty;
      for (int copy = 0; copy < 2; ++copy) {
        for (const core::HostTensor* t :
             {&fresh.attention_out, &fresh.softmax_max, &fresh.softmax_sum}) {
          dirty.push_back(engine.buffer_pool().Acquire(t->bytes.size()));
          std::memset(dirty.back().data(), 0xff, dirty.back().size());
        }
      }
    }  // Back to the pool, 0xff.
    const uint64_t reused_before = engine.buffer_pool().stats().reused;
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardCall call,
                              core::ForwardCall::Prepare(c.forward_args(), 2));
    core::CancelToken token;
    ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult got, engine.Run(call, token));
    EXPECT_EQ(engine.buffer_pool().stats().reused - reused_before, 3u);
    EXPECT_TRUE(got.attention_out.bytes == fresh.attention_out.bytes);
    EXPECT_TRUE(got.softmax_max.bytes == fresh.softmax_max.bytes);
    EXPECT_TRUE(got.softmax_sum.bytes == fresh.softmax_sum.bytes);
  }
}

}  // namespace
}  // namespace attnserve::test
