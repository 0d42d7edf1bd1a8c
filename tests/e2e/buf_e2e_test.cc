// The wire contract seen by a generic gRPC tool: `buf curl` discovers the
// schema through server reflection and speaks JSON; `buf lint` checks the
// .proto files.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/v1/attention.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"

namespace attnserve::e2e {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Keeps buf's cache out of the user's home directory.
std::vector<std::string> BufEnv() {
  return {absl::StrCat("BUF_CACHE_DIR=", ::testing::TempDir(), "/buf-cache")};
}

class BufCurlTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(kBufBinary.empty())
        << "buf was not found at configure time; install it with "
           "`npm install --prefix .tools @bufbuild/buf` and re-run cmake";
    ServerTest::SetUp();
  }

  // `buf curl` of `method` of AttentionService with `json` as the request.
  ProcessResult Curl(const std::string& method, const std::string& json) {
    return Run({kBufBinary, "curl", "--protocol", "grpc",
                "--http2-prior-knowledge", "--timeout", "60s", "-d", json,
                absl::StrCat("http://", server_->target(),
                             "/attnserve.v1.AttentionService/", method)},
               BufEnv());
  }
};

std::string JsonTensor(const std::vector<float>& values,
                       const std::vector<int64_t>& shape) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return absl::StrCat(R"({"dtype": "DATA_TYPE_FLOAT32", "shape": [)",
                      absl::StrJoin(shape, ", "), R"(], "data": ")",
                      absl::Base64Escape(bytes), R"("})");
}

TEST_F(BufCurlTest, ReflectionListsTheServices) {
  ProcessResult r =
      Run({kBufBinary, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
           "--list-services", absl::StrCat("http://", server_->target())},
          BufEnv());
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("attnserve.v1.AttentionService"));
  EXPECT_THAT(r.out, HasSubstr("grpc.health.v1.Health"));
}

TEST_F(BufCurlTest, GetServerInfoAnswersJson) {
  ProcessResult r = Curl("GetServerInfo", "{}");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &info).ok())
      << r.out;
  EXPECT_FALSE(info.version().empty());
  EXPECT_THAT(info.operators(), Contains("FlashAttentionScore"));
  EXPECT_THAT(info.operators(), Contains("FlashAttentionScoreGrad"));
  EXPECT_THAT(info.layouts(), Contains("BNSD"));
  EXPECT_THAT(info.dtypes(), Contains(v1::DATA_TYPE_BFLOAT16));
  EXPECT_EQ(info.worker_count(), 2);
  EXPECT_THAT(r.out, HasSubstr("\"workerCount\": \"2\""));
}

TEST_F(BufCurlTest, FlashAttentionScoreWithBase64DataMatchesReference) {
  // B=1, N1=2 query heads sharing N2=1 kv head, Sq=3, Skv=4, D=4, BNSD.
  constexpr int kN = 2, kSq = 3, kSkv = 4, kD = 4;
  constexpr double kScale = 0.5;
  const std::vector<float> q = RandomFloats(kN * kSq * kD, 11);
  const std::vector<float> k = RandomFloats(kSkv * kD, 12);
  const std::vector<float> v = RandomFloats(kSkv * kD, 13);
  const std::string json = absl::StrCat(
      R"({"query": )", JsonTensor(q, {1, kN, kSq, kD}), R"(, "key": )",
      JsonTensor(k, {1, 1, kSkv, kD}), R"(, "value": )",
      JsonTensor(v, {1, 1, kSkv, kD}),
      R"(, "scaleValue": 0.5, "headNum": "2", "inputLayout": "BNSD"})");
  ProcessResult r = Curl("FlashAttentionScore", json);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  v1::FlashAttentionScoreResponse response;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(r.out, &response).ok())
      << r.out;
  EXPECT_EQ(response.attention_out().dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(response.attention_out().shape(), ElementsAre(1, kN, kSq, kD));
  EXPECT_THAT(response.softmax_max().shape(), ElementsAre(1, kN, kSq, 8));
  EXPECT_THAT(response.softmax_sum().shape(), ElementsAre(1, kN, kSq, 8));
  const std::vector<float> out =
      TensorToFloats(response.attention_out()).value();
  const std::vector<float> max = TensorToFloats(response.softmax_max()).value();
  const std::vector<float> sum = TensorToFloats(response.softmax_sum()).value();

  for (int n = 0; n < kN; ++n) {
    for (int i = 0; i < kSq; ++i) {
      double s[kSkv];
      double m = -INFINITY;
      for (int j = 0; j < kSkv; ++j) {
        double dot = 0;
        for (int d = 0; d < kD; ++d)
          dot += q[(n * kSq + i) * kD + d] * k[j * kD + d];
        s[j] = kScale * dot;
        m = std::max(m, s[j]);
      }
      double l = 0;
      for (int j = 0; j < kSkv; ++j) l += std::exp(s[j] - m);
      const int row = n * kSq + i;
      for (int lane = 0; lane < 8; ++lane) {
        EXPECT_NEAR(max[row * 8 + lane], m, 1e-5) << n << "," << i;
        EXPECT_NEAR(sum[row * 8 + lane], l, 1e-5) << n << "," << i;
      }
      for (int d = 0; d < kD; ++d) {
        double expected = 0;
        for (int j = 0; j < kSkv; ++j) {
          expected += std::exp(s[j] - m) / l * v[j * kD + d];
        }
        EXPECT_NEAR(out[row * kD + d], expected, 1e-5)
            << n << "," << i << "," << d;
      }
    }
  }
}

TEST_F(BufCurlTest, BadHeadNumIsInvalidArgument) {
  const std::string json = absl::StrCat(
      R"({"query": )", JsonTensor(std::vector<float>(8, 1.0f), {1, 2, 1, 4}),
      R"(, "key": )", JsonTensor(std::vector<float>(8, 1.0f), {1, 2, 1, 4}),
      R"(, "value": )", JsonTensor(std::vector<float>(8, 1.0f), {1, 2, 1, 4}),
      R"(, "headNum": "3", "inputLayout": "BNSD"})");
  ProcessResult r = Curl("FlashAttentionScore", json);
  // buf curl exits with the gRPC code shifted left by three bits.
  EXPECT_EQ(r.exit_code, 3 << 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("invalid_argument"));
  EXPECT_THAT(r.err, HasSubstr("head_num"));
  EXPECT_THAT(r.err, HasSubstr("google.rpc.BadRequest"));
}

class BufLintTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(kBufBinary.empty())
        << "buf was not found at configure time; install it with "
           "`npm install --prefix .tools @bufbuild/buf` and re-run cmake";
  }

  ProcessResult Lint(const std::string& dir) {
    absl::StatusOr<ProcessResult> r =
        RunProcess({kBufBinary, "lint", dir}, kRunTimeout, BufEnv());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProcessResult{};
  }
};

TEST_F(BufLintTest, ProtoDirectoryPassesLint) {
  ProcessResult r = Lint(kProtoDir);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "");
}

// The lint run above can fail: a module breaking the STANDARD rules does.
TEST_F(BufLintTest, ModuleBreakingStandardRulesFailsLint) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/bad-lint-module");
  std::filesystem::create_directories(dir + "/bad/v1");
  std::ofstream(dir + "/buf.yaml")
      << "version: v2\nlint:\n  use:\n    - STANDARD\n";
  std::ofstream(dir + "/bad/v1/bad.proto")
      << "syntax = \"proto3\";\npackage bad.v1;\nmessage lower_case { int32 "
         "CamelField = 1; }\n";
  ProcessResult r = Lint(dir);
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out + r.err, HasSubstr("lower_case"));
}

}  // namespace
}  // namespace attnserve::e2e
