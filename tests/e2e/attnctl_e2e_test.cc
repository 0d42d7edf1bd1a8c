// attnctl against a real attnserve process.
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"

namespace attnserve::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

using AttnctlTest = ServerTest;

// The number after "<key>: " on the line starting with it, or -1.
double NumberAfter(const std::string& text, const std::string& key) {
  const std::string line = LineStartingWith(text, key + ": ");
  double value = -1;
  if (line.empty() || !absl::SimpleAtod(line.substr(key.size() + 2), &value)) {
    return -1;
  }
  return value;
}

TEST_F(AttnctlTest, HealthPrintsServingAndExitsZero) {
  ProcessResult r = Run({kAttnctlBinary, "health", TargetFlag()});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(AttnctlTest, HealthFailsWhenTheServerIsGone) {
  const std::string target = TargetFlag();
  ASSERT_EQ(server_->Stop(), 0) << server_->log();
  ProcessResult r = Run({kAttnctlBinary, "health", target, "--timeout=5s"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(AttnctlTest, InfoPrintsOperatorsLayoutsAndLimits) {
  ProcessResult r = Run({kAttnctlBinary, "info", TargetFlag()});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(LineStartingWith(r.out, "version: "), StartsWith("version: "));
  EXPECT_THAT(LineStartingWith(r.out, "operators: "),
              HasSubstr("FlashAttentionScore"));
  EXPECT_THAT(LineStartingWith(r.out, "layouts: "), HasSubstr("BNSD"));
  EXPECT_THAT(LineStartingWith(r.out, "dtypes: "), HasSubstr("BFLOAT16"));
  EXPECT_EQ(NumberAfter(r.out, "worker_count"), 2);
  EXPECT_GT(NumberAfter(r.out, "max_message_bytes"), 0);
}

TEST_F(AttnctlTest, ForwardFp32PrintsOutputsChecksumsAndTimings) {
  ProcessResult r =
      Run({kAttnctlBinary, "forward", TargetFlag(), "--layout=BNSD",
           "--dtype=fp32", "-b", "2", "-n", "4", "-s", "128", "-d", "64"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(
      LineStartingWith(r.out, "attention_out: "),
      StartsWith("attention_out: shape=[2,4,128,64] dtype=FLOAT32 sum="));
  EXPECT_THAT(LineStartingWith(r.out, "attention_out: "),
              HasSubstr(" abs_sum="));
  EXPECT_THAT(LineStartingWith(r.out, "softmax_max: "),
              StartsWith("softmax_max: shape=[2,4,128,8] dtype=FLOAT32"));
  EXPECT_THAT(LineStartingWith(r.out, "softmax_sum: "),
              StartsWith("softmax_sum: shape=[2,4,128,8] dtype=FLOAT32"));
  EXPECT_THAT(LineStartingWith(r.out, "run 1/1: "), HasSubstr("gflops="));
  // FA2 convention: two matrix products of 2*Sq*Skv*D flops per head.
  EXPECT_EQ(NumberAfter(r.out, "flops"), 4.0 * 2 * 4 * 128 * 128 * 64);
  EXPECT_GT(NumberAfter(r.out, "compute_s"), 0);
  EXPECT_GE(NumberAfter(r.out, "queue_s"), 0);
  EXPECT_GE(NumberAfter(r.out, "round_trip_s"),
            NumberAfter(r.out, "compute_s"));
  EXPECT_GT(NumberAfter(r.out, "gflops"), 0);
}

TEST_F(AttnctlTest, ForwardBf16DocumentedExampleWorks) {
  ProcessResult r =
      Run({kAttnctlBinary, "forward", TargetFlag(), "--layout", "BNSD",
           "--dtype", "bf16", "-b", "1", "-n", "8", "-s", "1024", "-d", "128"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(
      LineStartingWith(r.out, "attention_out: "),
      StartsWith("attention_out: shape=[1,8,1024,128] dtype=BFLOAT16 sum="));
  EXPECT_THAT(LineStartingWith(r.out, "softmax_max: "),
              StartsWith("softmax_max: shape=[1,8,1024,8] dtype=FLOAT32"));
  EXPECT_GT(NumberAfter(r.out, "gflops"), 0);
}

TEST_F(AttnctlTest, ForwardIsReproducibleForASeedAndChangesWithIt) {
  const std::vector<std::string> base = {
      kAttnctlBinary, "forward", TargetFlag(), "--dtype=fp16", "-n", "2", "-s",
      "64",           "-d",      "32"};
  auto with_seed = [&](const char* seed) {
    std::vector<std::string> argv = base;
    argv.push_back(absl::StrCat("--seed=", seed));
    ProcessResult r = Run(argv);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    return LineStartingWith(r.out, "attention_out: ");
  };
  const std::string first = with_seed("7");
  EXPECT_THAT(first, HasSubstr("dtype=FLOAT16"));
  EXPECT_EQ(with_seed("7"), first);
  EXPECT_NE(with_seed("8"), first);
}

TEST_F(AttnctlTest, ForwardBuildsEveryPaddedLayout) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"BSH", "[2,5,24]"},
      {"SBH", "[5,2,24]"},
      {"BSND", "[2,5,3,8]"},
      {"BNSD", "[2,3,5,8]"}};
  for (const auto& [layout, shape] : cases) {
    ProcessResult r =
        Run({kAttnctlBinary, "forward", TargetFlag(), "--layout=" + layout,
             "-b", "2", "-n", "3", "--sq", "5", "--skv", "9", "-d", "8"});
    ASSERT_EQ(r.exit_code, 0) << layout << "\n" << Describe(r);
    EXPECT_THAT(LineStartingWith(r.out, "attention_out: "),
                StartsWith("attention_out: shape=" + shape))
        << layout;
    EXPECT_THAT(LineStartingWith(r.out, "softmax_max: "),
                StartsWith("softmax_max: shape=[2,3,5,8]"))
        << layout;
  }
}

TEST_F(AttnctlTest, CausalMaskChangesTheResultAndRepeatRunsEachCall) {
  const std::vector<std::string> base = {
      kAttnctlBinary, "forward", TargetFlag(), "-n", "2",
      "-s",           "32",      "-d",         "16"};
  ProcessResult full = Run(base);
  std::vector<std::string> causal_argv = base;
  causal_argv.insert(causal_argv.end(), {"--causal_mask", "--repeat=3"});
  ProcessResult causal = Run(causal_argv);
  ASSERT_EQ(full.exit_code, 0) << Describe(full);
  ASSERT_EQ(causal.exit_code, 0) << Describe(causal);
  EXPECT_THAT(causal.out, HasSubstr("causal_mask=true"));
  EXPECT_NE(LineStartingWith(causal.out, "attention_out: "), "");
  EXPECT_NE(LineStartingWith(causal.out, "attention_out: "),
            LineStartingWith(full.out, "attention_out: "));
  EXPECT_NE(LineStartingWith(causal.out, "run 3/3: "), "");
  EXPECT_EQ(LineStartingWith(causal.out, "run 4/3: "), "");
}

void ExpectBackwardOutputs(const ProcessResult& r, const std::string& dtype) {
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(LineStartingWith(r.out, "forward: "), HasSubstr("compute_s="));
  EXPECT_THAT(LineStartingWith(r.out, "dq: "),
              StartsWith("dq: shape=[1,4,96,32] dtype=" + dtype + " sum="));
  EXPECT_THAT(LineStartingWith(r.out, "dk: "),
              StartsWith("dk: shape=[1,2,96,32] dtype=" + dtype + " sum="));
  EXPECT_THAT(LineStartingWith(r.out, "dv: "),
              StartsWith("dv: shape=[1,2,96,32] dtype=" + dtype + " sum="));
  EXPECT_GT(NumberAfter(r.out, "flops"), 0);
  EXPECT_GT(NumberAfter(r.out, "gflops"), 0);
}

TEST_F(AttnctlTest, BackwardFp32WithGroupedKvHeads) {
  ExpectBackwardOutputs(
      Run({kAttnctlBinary, "backward", TargetFlag(), "--dtype=fp32", "-n", "4",
           "--kv_heads", "2", "-s", "96", "-d", "32"}),
      "FLOAT32");
}

TEST_F(AttnctlTest, BackwardBf16WithGroupedKvHeads) {
  ExpectBackwardOutputs(
      Run({kAttnctlBinary, "backward", TargetFlag(), "--dtype=bfloat16", "-n",
           "4", "--kv_heads=2", "-s", "96", "-d", "32", "--causal_mask"}),
      "BFLOAT16");
}

TEST_F(AttnctlTest, BadHeadNumPrintsInvalidArgumentAndFails) {
  ProcessResult r = Run({kAttnctlBinary, "forward", TargetFlag(), "-n", "8",
                         "--head_num", "3", "-s", "16", "-d", "8"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(r.err, HasSubstr("head_num"));
  EXPECT_THAT(r.err, HasSubstr("field_violation: head_num"));
  EXPECT_EQ(LineStartingWith(r.out, "attention_out: "), "");
}

TEST_F(AttnctlTest, KvHeadsNotDividingQueryHeadsIsRejected) {
  ProcessResult r = Run({kAttnctlBinary, "backward", TargetFlag(), "-n", "8",
                         "--kv_heads", "3", "-s", "16", "-d", "8"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
}

TEST_F(AttnctlTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(Run({kAttnctlBinary, "launch", TargetFlag()}).exit_code, 2);
  EXPECT_EQ(Run({kAttnctlBinary, TargetFlag()}).exit_code, 2);
  EXPECT_EQ(
      Run({kAttnctlBinary, "forward", TargetFlag(), "--dtype=fp64"}).exit_code,
      2);
  EXPECT_EQ(
      Run({kAttnctlBinary, "forward", TargetFlag(), "--layout=NTD"}).exit_code,
      2);
  EXPECT_EQ(Run({kAttnctlBinary, "forward", TargetFlag(), "-d", "0"}).exit_code,
            2);
}

}  // namespace
}  // namespace attnserve::e2e
