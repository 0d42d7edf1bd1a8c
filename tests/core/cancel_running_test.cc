// Cancellation of runs already in progress: the backward in both of its
// decompositions (fused (batch, kv head) items; split kv-tile then
// query-tile items) and NSA's forward and grad. Each is cancelled from
// another thread once its run has leased its workspace and a quarter of an
// uncancelled run's time has passed (sooner if the run was done by then);
// the run must end CANCELLED within a fraction of an uncancelled run's time
// (measured in the same test), return its workspace, and the same engine's
// next run must give the uncancelled run's exact bits (every run here is
// deterministic).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/nsa.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::test::StatusIs;

constexpr int kThreads = 2;

// FLOAT32 values uniform in [-1, 1) from a fixed generator.
HostTensor RandomFloats(std::vector<int64_t> shape, uint64_t seed) {
  HostTensor t = MakeHostTensor(DType::kFloat32, std::move(shape));
  auto* p = reinterpret_cast<float*>(t.bytes.data());
  const size_t n = t.bytes.size() / sizeof(float);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53 * 2 - 1);
  }
  return t;
}

// The bytes of every output, in order, or the run's status.
using RunFn =
    std::function<absl::StatusOr<std::string>(const CancelToken& cancel)>;

std::string Bytes(const ForwardResult& r) {
  return absl::StrCat(r.attention_out.bytes.view(), r.softmax_max.bytes.view(),
                      r.softmax_sum.bytes.view());
}
std::string Bytes(const BackwardResult& r) {
  return absl::StrCat(r.dq.bytes.view(), r.dk.bytes.view(), r.dv.bytes.view());
}

// Runs `run` once uncancelled, then cancels it from another thread once it
// holds its workspace and some time has passed. A host shared with other
// work can finish a run sooner than the uncancelled one took; when the run
// then ends OK because every tile had started before Cancel(), the next
// attempt cancels sooner, and the last one cancels as soon as the run holds
// its workspace, where only a cancellation that is never checked ends OK.
void ExpectCancelsMidRun(Engine& engine, const RunFn& run) {
  // An uncancelled run: the expected bits and the time a whole run takes.
  CancelToken live;
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::string> expected = run(live);
  const absl::Duration whole = absl::Now() - t0;
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(engine.workspace_pool().in_use_bytes(), 0u);

  constexpr int kAttempts = 4;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const absl::Duration delay = attempt + 1 == kAttempts
                                     ? absl::ZeroDuration()
                                     : whole / (4 << attempt);
    CancelToken token;
    absl::StatusOr<std::string> cancelled;
    absl::Time ended;
    std::thread runner([&] {
      cancelled = run(token);
      ended = absl::Now();
    });
    // The run has started once it holds its workspace.
    while (engine.workspace_pool().in_use_bytes() == 0) {
      absl::SleepFor(absl::Microseconds(50));
    }
    absl::SleepFor(delay);
    const absl::Time cancelled_at = absl::Now();
    token.Cancel();
    runner.join();
    if (cancelled.ok() && attempt + 1 < kAttempts) {
      std::fprintf(stderr,
                   "the run ended OK %.2f ms after a Cancel() %.1f ms into it; "
                   "cancelling sooner\n",
                   absl::ToDoubleMilliseconds(ended - cancelled_at),
                   absl::ToDoubleMilliseconds(delay));
      EXPECT_TRUE(*cancelled == *expected);
      continue;
    }
    EXPECT_THAT(cancelled.status(), StatusIs(absl::StatusCode::kCancelled));
    EXPECT_LT(ended - cancelled_at, whole / 4)
        << "a whole run takes " << whole << "; the cancelled run ended "
        << (ended - cancelled_at) << " after its cancellation";
    EXPECT_EQ(engine.workspace_pool().in_use_bytes(), 0u);
    std::fprintf(stderr,
                 "whole run %.1f ms; cancelled %.1f ms into the run, which "
                 "ended %.2f ms after Cancel()\n",
                 absl::ToDoubleMilliseconds(whole),
                 absl::ToDoubleMilliseconds(delay),
                 absl::ToDoubleMilliseconds(ended - cancelled_at));
    break;
  }

  CancelToken again;
  absl::StatusOr<std::string> next = run(again);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_TRUE(*next == *expected) << "the run after a cancelled one differs";
}

// A BNSD attention problem and its forward's residuals.
struct AttentionProblem {
  HostTensor q, k, v, dy;
  ForwardResult forward;

  AttentionProblem(int64_t n1, int64_t n2, int64_t s1, int64_t s2, int64_t d)
      : q(RandomFloats({1, n1, s1, d}, 1)),
        k(RandomFloats({1, n2, s2, d}, 2)),
        v(RandomFloats({1, n2, s2, d}, 3)),
        dy(RandomFloats({1, n1, s1, d}, 4)) {}

  AttentionOptions options() const {
    AttentionOptions o;
    o.head_num = q.shape[1];
    o.input_layout = "BNSD";
    o.scale_value = 0.125;
    return o;
  }
  ForwardArgs forward_args() const {
    return ForwardArgs{q.view(), k.view(), v.view(), options()};
  }
  BackwardArgs backward_args() const {
    BackwardArgs a;
    a.query = q.view();
    a.key = k.view();
    a.value = v.view();
    a.dy = dy.view();
    a.softmax_max = forward.softmax_max.view();
    a.softmax_sum = forward.softmax_sum.view();
    a.attention_in = forward.attention_out.view();
    a.options = options();
    return a;
  }
};

void CheckBackwardCancels(int64_t n1, int64_t n2, int64_t s) {
  AttentionProblem p(n1, n2, s, s, 64);
  Engine engine(EngineOptions{.intra_op_threads = kThreads});
  {
    ATTN_ASSERT_OK_AND_ASSIGN(ForwardCall f,
                              ForwardCall::Prepare(p.forward_args(), kThreads));
    CancelToken token;
    ATTN_ASSERT_OK_AND_ASSIGN(p.forward, engine.Run(f, token));
  }
  ATTN_ASSERT_OK_AND_ASSIGN(BackwardCall call,
                            BackwardCall::Prepare(p.backward_args(), kThreads));
  ASSERT_EQ(call.threads(), kThreads);
  ExpectCancelsMidRun(
      engine, [&](const CancelToken& t) -> absl::StatusOr<std::string> {
        ATTN_ASSIGN_OR_RETURN(BackwardResult r, engine.Run(call, t));
        return Bytes(r);
      });
}

// B x N2 = 2 kv heads for 2 threads: (batch, kv head) items.
TEST(CancelRunningTest, FusedBackwardEndsCancelledPromptly) {
  CheckBackwardCancels(/*n1=*/4, /*n2=*/2, /*s=*/2048);
}

// MQA, B x N2 = 1 kv head for 2 threads: kv-tile items, then query-tile
// items.
TEST(CancelRunningTest, SplitBackwardEndsCancelledPromptly) {
  CheckBackwardCancels(/*n1=*/4, /*n2=*/1, /*s=*/2048);
}

// NSA: one batch of T tokens, every token selecting K distinct blocks.
struct NsaProblem {
  static constexpr int64_t kN1 = 8, kN2 = 1, kD = 128, kBlock = 64, kK = 16;
  int64_t t;
  HostTensor q, k, v, topk, dy;
  ForwardResult forward;

  explicit NsaProblem(int64_t tokens)
      : t(tokens),
        q(RandomFloats({tokens, kN1, kD}, 5)),
        k(RandomFloats({tokens, kN2, kD}, 6)),
        v(RandomFloats({tokens, kN2, kD}, 7)),
        topk(MakeHostTensor(DType::kInt32, {tokens, kN2, kK})),
        dy(RandomFloats({tokens, kN1, kD}, 8)) {
    auto* idx = reinterpret_cast<int32_t*>(topk.bytes.data());
    const int64_t blocks = tokens / kBlock;
    for (int64_t i = 0; i < tokens; ++i) {
      for (int64_t c = 0; c < kK; ++c) {
        idx[i * kK + c] = static_cast<int32_t>((i * 7 + c * 5) % blocks);
      }
    }
  }
  NsaOptions options() const {
    NsaOptions o;
    o.actual_seq_qlen = {t};
    o.actual_seq_kvlen = {t};
    o.scale_value = 0.088;
    o.selected_block_size = kBlock;
    o.selected_block_count = kK;
    o.head_num = kN1;
    o.input_layout = "TND";
    return o;
  }
  NsaForwardArgs forward_args() const {
    return NsaForwardArgs{q.view(), k.view(), v.view(), topk.view(), options()};
  }
  NsaBackwardArgs backward_args() const {
    NsaBackwardArgs a;
    a.query = q.view();
    a.key = k.view();
    a.value = v.view();
    a.attention_out = forward.attention_out.view();
    a.attention_out_grad = dy.view();
    a.softmax_max = forward.softmax_max.view();
    a.softmax_sum = forward.softmax_sum.view();
    a.topk_indices = topk.view();
    a.options = options();
    return a;
  }
};

TEST(CancelRunningTest, NsaForwardEndsCancelledPromptly) {
  NsaProblem p(4096);
  Engine engine(EngineOptions{.intra_op_threads = kThreads});
  ATTN_ASSERT_OK_AND_ASSIGN(
      NsaForwardCall call, NsaForwardCall::Prepare(p.forward_args(), kThreads));
  ExpectCancelsMidRun(
      engine, [&](const CancelToken& t) -> absl::StatusOr<std::string> {
        ATTN_ASSIGN_OR_RETURN(ForwardResult r, engine.Run(call, t));
        return Bytes(r);
      });
}

TEST(CancelRunningTest, NsaGradEndsCancelledPromptly) {
  NsaProblem p(2048);
  Engine engine(EngineOptions{.intra_op_threads = kThreads});
  {
    ATTN_ASSERT_OK_AND_ASSIGN(
        NsaForwardCall f, NsaForwardCall::Prepare(p.forward_args(), kThreads));
    CancelToken token;
    ATTN_ASSERT_OK_AND_ASSIGN(p.forward, engine.Run(f, token));
  }
  ATTN_ASSERT_OK_AND_ASSIGN(
      NsaBackwardCall call,
      NsaBackwardCall::Prepare(p.backward_args(), kThreads));
  ExpectCancelsMidRun(
      engine, [&](const CancelToken& t) -> absl::StatusOr<std::string> {
        ATTN_ASSIGN_OR_RETURN(BackwardResult r, engine.Run(call, t));
        return Bytes(r);
      });
}

}  // namespace
}  // namespace attnserve::core
