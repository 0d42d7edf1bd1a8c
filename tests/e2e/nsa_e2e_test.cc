// NSA selected attention end to end: attnctl's nsa-forward / nsa-backward
// against a real attnserve process, and `buf curl` (JSON over server
// reflection) for both RPCs and GetWorkspaceSize, checked against the
// float64 gathering reference.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "attnserve/v1/attention.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/nsa_requests.h"

namespace attnserve::e2e {
namespace {

using ::attnserve::test::ExpectNsaBackwardMatches;
using ::attnserve::test::ExpectNsaForwardMatches;
using ::attnserve::test::FromWire;
using ::attnserve::test::NsaCase;
using ::attnserve::test::NsaCaseConfig;
using ::attnserve::test::NsaForwardRequest;
using ::attnserve::test::NsaGradRequest;
using ::attnserve::test::NsaIndexPattern;
using ::attnserve::test::TolerancesFor;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The number after "<key>: " on the line starting with it, or -1.
double NumberAfter(const std::string& text, const std::string& key) {
  const std::string line = LineStartingWith(text, key + ": ");
  double value = -1;
  if (line.empty() || !absl::SimpleAtod(line.substr(key.size() + 2), &value)) {
    return -1;
  }
  return value;
}

using NsaAttnctlTest = ServerTest;

TEST_F(NsaAttnctlTest, ForwardPrintsOutputsAndSelectedKeyFlops) {
  ProcessResult r =
      Run({kAttnctlBinary, "nsa-forward", TargetFlag(), "--dtype=bf16", "-b",
           "2", "-n", "4", "--kv_heads", "2", "-s", "128", "-d", "128",
           "--block_size", "16", "--block_count", "4"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(LineStartingWith(r.out, "op: "),
              HasSubstr("NsaSelectedAttention layout=TND dtype=BFLOAT16"));
  EXPECT_THAT(
      LineStartingWith(r.out, "attention_out: "),
      StartsWith("attention_out: shape=[256,4,128] dtype=BFLOAT16 sum="));
  EXPECT_THAT(LineStartingWith(r.out, "softmax_max: "),
              StartsWith("softmax_max: shape=[256,4,8] dtype=FLOAT32"));
  // Only the selected keys count: T1 * N1 * K * bs keys, (D + Dv) each.
  EXPECT_EQ(NumberAfter(r.out, "flops"), 2.0 * 256 * 4 * 4 * 16 * 256);
  EXPECT_GT(NumberAfter(r.out, "gflops"), 0);
  EXPECT_GT(NumberAfter(r.out, "workspace_bytes"), 0);
}

TEST_F(NsaAttnctlTest, BackwardWithLargeGroupAndSmallerValueDim) {
  ProcessResult r = Run({kAttnctlBinary,
                         "nsa-backward",
                         TargetFlag(),
                         "--dtype=fp32",
                         "-n",
                         "16",
                         "--kv_heads",
                         "1",
                         "-s",
                         "96",
                         "-d",
                         "192",
                         "--dv",
                         "128",
                         "--block_size",
                         "16",
                         "--block_count",
                         "4",
                         "--sparse_mode",
                         "2"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(LineStartingWith(r.out, "forward: "), HasSubstr("compute_s="));
  EXPECT_THAT(LineStartingWith(r.out, "dq: "),
              StartsWith("dq: shape=[96,16,192] dtype=FLOAT32 sum="));
  EXPECT_THAT(LineStartingWith(r.out, "dk: "),
              StartsWith("dk: shape=[96,1,192] dtype=FLOAT32 sum="));
  EXPECT_THAT(LineStartingWith(r.out, "dv: "),
              StartsWith("dv: shape=[96,1,128] dtype=FLOAT32 sum="));
  EXPECT_GT(NumberAfter(r.out, "flops"), 0);
  EXPECT_GT(NumberAfter(r.out, "gflops"), 0);
}

TEST_F(NsaAttnctlTest, InvalidBlockSizeIsReportedWithTheField) {
  ProcessResult r =
      Run({kAttnctlBinary, "nsa-forward", TargetFlag(), "-n", "2", "-s", "256",
           "--block_size", "24", "--block_count", "4"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(r.err, HasSubstr("field_violation: selected_block_size"));
  EXPECT_EQ(LineStartingWith(r.out, "attention_out: "), "");
}

TEST_F(NsaAttnctlTest, InfoListsTheNsaOperatorsAndBadFlagsAreUsageErrors) {
  ProcessResult info = Run({kAttnctlBinary, "info", TargetFlag()});
  ASSERT_EQ(info.exit_code, 0) << Describe(info);
  EXPECT_THAT(LineStartingWith(info.out, "operators: "),
              HasSubstr("NsaSelectedAttention,NsaSelectedAttentionGrad"));
  EXPECT_EQ(
      Run({kAttnctlBinary, "nsa-forward", TargetFlag(), "--block_count=0"})
          .exit_code,
      2);
  EXPECT_EQ(
      Run({kAttnctlBinary, "nsa-backward", TargetFlag(), "--dv=-1"}).exit_code,
      2);
}

// --- buf curl ---

class NsaBufCurlTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(kBufBinary.empty())
        << "buf was not found at configure time; install it with "
           "`npm install --prefix .tools @bufbuild/buf` and re-run cmake";
    ServerTest::SetUp();
  }

  // `buf curl` of `method` with `request` as JSON, read from a file (the
  // tensors are too large for one command-line argument).
  ProcessResult Curl(const std::string& method,
                     const google::protobuf::Message& request) {
    std::string json;
    EXPECT_TRUE(
        google::protobuf::util::MessageToJsonString(request, &json).ok());
    // One file per process and test: ctest runs tests in parallel.
    const std::string path = absl::StrCat(
        ::testing::TempDir(), "/nsa-", getpid(), "-",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
        method, ".json");
    std::ofstream(path) << json;
    return Run(
        {kBufBinary, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
         "--timeout", "60s", "-d", "@" + path,
         absl::StrCat("http://", server_->target(),
                      "/attnserve.v1.AttentionService/", method)},
        {absl::StrCat("BUF_CACHE_DIR=", ::testing::TempDir(), "/buf-cache")});
  }

  template <typename Response>
  Response Parse(const ProcessResult& r) {
    Response response;
    EXPECT_TRUE(
        google::protobuf::util::JsonStringToMessage(r.out, &response).ok())
        << r.out;
    return response;
  }
};

// Two batches (16 and 8 queries over 64 and 96 keys), G=2, causal mode 2.
NsaCaseConfig CurlConfig() {
  NsaCaseConfig config;
  config.seq_q = {16, 8};
  config.seq_kv = {64, 96};
  config.n1 = 2;
  config.n2 = 1;
  config.block_count = 2;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 41;
  return config;
}

TEST_F(NsaBufCurlTest, ForwardGradAndWorkspaceSizeMatchTheReference) {
  NsaCase c(CurlConfig());
  const v1::NsaSelectedAttentionRequest forward_request = NsaForwardRequest(c);
  ProcessResult r = Curl("NsaSelectedAttention", forward_request);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto forward = Parse<v1::NsaSelectedAttentionResponse>(r);
  core::ForwardResult got;
  got.attention_out = FromWire(forward.attention_out());
  got.softmax_max = FromWire(forward.softmax_max());
  got.softmax_sum = FromWire(forward.softmax_sum());
  ExpectNsaForwardMatches(c, got, TolerancesFor(core::DType::kFloat32));

  v1::GetWorkspaceSizeRequest sizing;
  *sizing.mutable_nsa_selected_attention() = forward_request;
  r = Curl("GetWorkspaceSize", sizing);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto sized = Parse<v1::GetWorkspaceSizeResponse>(r);
  EXPECT_EQ(sized.flops(), forward.stats().flops());
  ASSERT_EQ(sized.outputs_size(), 3);
  EXPECT_EQ(sized.outputs(0).name(), "attention_out");

  const v1::NsaSelectedAttentionGradRequest grad_request =
      NsaGradRequest(c, forward);
  r = Curl("NsaSelectedAttentionGrad", grad_request);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto grad = Parse<v1::NsaSelectedAttentionGradResponse>(r);
  core::BackwardResult grads;
  grads.dq = FromWire(grad.dq());
  grads.dk = FromWire(grad.dk());
  grads.dv = FromWire(grad.dv());
  ExpectNsaBackwardMatches(c, grads, TolerancesFor(core::DType::kFloat32));
  EXPECT_GT(grad.stats().flops(), 0);
}

TEST_F(NsaBufCurlTest, IndexOutsideItsBatchIsInvalidArgument) {
  NsaCase c(CurlConfig());
  v1::NsaSelectedAttentionRequest request = NsaForwardRequest(c);
  // Token 3 (batch 0: 64 keys = blocks 0..3), slot 1: block 5.
  const int32_t bad = 5;
  request.mutable_topk_indices()->mutable_data()->replace(
      (3 * 2 + 1) * 4, 4, reinterpret_cast<const char*>(&bad), 4);
  ProcessResult r = Curl("NsaSelectedAttention", request);
  // buf curl exits with the gRPC code shifted left by three bits.
  EXPECT_EQ(r.exit_code, 3 << 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("invalid_argument"));
  EXPECT_THAT(r.err, HasSubstr("topk_indices[3,0,1]"));
  EXPECT_THAT(r.err, HasSubstr("google.rpc.BadRequest"));
}

}  // namespace
}  // namespace attnserve::e2e
