// Resident tensors end to end: the real attnserve process driven by attnctl
// (put, get, rm, --resident forward/backward), by the resident workflow of
// docs/api.md (run as written, with buf curl and attnctl), and observed
// through its metrics; a tensor's time to live with a short real TTL; and
// uploads in progress when the process gets SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/http_get.h"

namespace attnserve::e2e {
namespace {

using ::attnserve::test::HttpGet;
using ::attnserve::test::MetricValue;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

// The value after "handle: " in attnctl put's output.
std::string HandleOf(const std::string& out) {
  const std::string line = LineStartingWith(out, "handle: ");
  return line.empty() ? "" : line.substr(8);
}

class ResidentE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> metrics = PickFreePort();
    ASSERT_TRUE(metrics.ok());
    metrics_port_ = *metrics;
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(
            kAttnserveBinary,
            {"--workers=2", "--tensor_ttl=3s",
             absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << server_->log();
    }
  }

  ProcessResult Attnctl(std::vector<std::string> args) {
    args.insert(args.begin(), {kAttnctlBinary});
    args.push_back("--target=" + server_->target());
    absl::StatusOr<ProcessResult> r = RunProcess(args, kRunTimeout);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProcessResult{};
  }

  double Metric(const std::string& series) {
    absl::StatusOr<test::HttpResponse> r = HttpGet(metrics_port_, "/metrics");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? MetricValue(r->body, series) : -1;
  }

  int metrics_port_ = 0;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ResidentE2eTest, AttnctlPutGetRmRoundTripsAFile) {
  const std::string dir = ::testing::TempDir();
  const std::string in = absl::StrCat(dir, "/resident_in_", getpid(), ".bin");
  const std::string out = absl::StrCat(dir, "/resident_out_", getpid(), ".bin");
  std::string bytes(3 * 1000 * 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  {
    std::ofstream f(in, std::ios::binary);
    f << bytes;
  }
  ProcessResult put =
      Attnctl({"put", "--dtype=bf16", "--shape=3,1000", "--input=" + in,
               "--chunk_bytes=1000", "--ttl=60"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  const std::string handle = HandleOf(put.out);
  EXPECT_THAT(handle, MatchesRegex("[0-9a-f]{32}"));
  EXPECT_EQ(ReportValue(put.out, "bytes"), 6000);
  EXPECT_EQ(ReportValue(put.out, "expires_in_s"), 60);
  EXPECT_EQ(Metric("attnserve_tensor_store_bytes"), 6000);
  EXPECT_EQ(Metric("attnserve_tensor_store_entries"), 1);

  ProcessResult get = Attnctl({"get", handle, "--output=" + out});
  ASSERT_EQ(get.exit_code, 0) << Describe(get);
  EXPECT_THAT(get.out, HasSubstr("shape=[3,1000] dtype=BFLOAT16"));
  std::ifstream f(out, std::ios::binary);
  std::stringstream back;
  back << f.rdbuf();
  EXPECT_TRUE(back.str() == bytes) << "downloaded bytes differ";

  ProcessResult rm = Attnctl({"rm", handle});
  ASSERT_EQ(rm.exit_code, 0) << Describe(rm);
  EXPECT_THAT(rm.out, HasSubstr("deleted: " + handle));
  ProcessResult gone = Attnctl({"get", handle});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_THAT(gone.err, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Metric("attnserve_tensor_store_bytes"), 0);
  EXPECT_EQ(Metric("attnserve_tensor_puts_total"), 1);
  EXPECT_EQ(Metric("attnserve_tensor_gets_total"), 1);
  EXPECT_EQ(Metric("attnserve_tensor_deletes_total"), 1);
  EXPECT_GE(Metric("attnserve_tensor_not_found_total"), 1);
  std::remove(in.c_str());
  std::remove(out.c_str());
}

// --resident uploads q/k/v once, keeps the forward's outputs and sends only
// dy to the backward: the gradients print the same sums as the backward that
// sends everything (same seed), for a fifth of the request bytes.
TEST_F(ResidentE2eTest, AttnctlResidentBackwardMatchesTheFullOne) {
  const std::vector<std::string> shape = {"-n", "4",  "-s",      "256",
                                          "-d", "64", "--seed=5"};
  std::vector<std::string> full_args = {"backward"};
  full_args.insert(full_args.end(), shape.begin(), shape.end());
  std::vector<std::string> resident_args = full_args;
  resident_args.push_back("--resident");
  ProcessResult full = Attnctl(full_args);
  ProcessResult resident = Attnctl(resident_args);
  ASSERT_EQ(full.exit_code, 0) << Describe(full);
  ASSERT_EQ(resident.exit_code, 0) << Describe(resident);
  for (const char* grad : {"dq: ", "dk: ", "dv: "}) {
    const std::string line = LineStartingWith(full.out, grad);
    ASSERT_FALSE(line.empty()) << full.out;
    EXPECT_EQ(LineStartingWith(resident.out, grad), line);
  }
  const double full_bytes = ReportValue(full.out, "request_bytes");
  const double resident_bytes = ReportValue(resident.out, "request_bytes");
  ASSERT_GT(full_bytes, 0) << full.out;
  ASSERT_GT(resident_bytes, 0) << resident.out;
  EXPECT_LE(resident_bytes, 0.2 * full_bytes);
  // The session deleted everything it stored when it ended.
  EXPECT_EQ(Metric("attnserve_tensor_store_bytes"), 0);
  EXPECT_GE(Metric("attnserve_tensor_handle_uses_total"), 6);
}

TEST_F(ResidentE2eTest, AnUnusedTensorExpiresAndItsMemoryIsFreed) {
  ProcessResult put = Attnctl({"put", "--shape=1000", "--ttl=1"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  // The default (--tensor_ttl=3s) for one without --ttl.
  ProcessResult kept = Attnctl({"put", "--shape=10"});
  ASSERT_EQ(kept.exit_code, 0) << Describe(kept);
  EXPECT_EQ(ReportValue(kept.out, "expires_in_s"), 3);
  EXPECT_EQ(AwaitMetricAtLeast(metrics_port_, "attnserve_tensor_expiries_total",
                               1, absl::Seconds(10)),
            1);
  EXPECT_EQ(Metric("attnserve_tensor_store_bytes"), 40);
  ProcessResult gone = Attnctl({"get", HandleOf(put.out)});
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_THAT(gone.err, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Attnctl({"get", HandleOf(kept.out)}).exit_code, 0);
}

// The block of docs/api.md that follows `marker`, from its ```sh line to the
// closing ```.
std::string DocBlock(const std::string& marker) {
  std::ifstream f(kDocsDir + "/api.md");
  std::stringstream text;
  text << f.rdbuf();
  const std::string all = text.str();
  const size_t at = all.find(marker);
  if (at == std::string::npos) return "";
  const size_t start = all.find("```sh\n", at);
  if (start == std::string::npos) return "";
  const size_t end = all.find("\n```", start + 6);
  if (end == std::string::npos) return "";
  return all.substr(start + 6, end - start - 6);
}

// Runs the examples as written, against this server, with buf and attnctl
// on PATH.
TEST_F(ResidentE2eTest, TheDocumentedWorkflowsRun) {
  ASSERT_FALSE(kBufBinary.empty()) << "buf was not found at configure time";
  for (const char* marker :
       {"<!-- resident-attnctl -->", "<!-- resident-buf-curl -->"}) {
    SCOPED_TRACE(marker);
    const std::string block = DocBlock(marker);
    ASSERT_FALSE(block.empty()) << "docs/api.md has no block after " << marker;
    const std::string script = absl::StrCat(
        "set -euo pipefail\ncd \"$(mktemp -d)\"\n",
        absl::StrReplaceAll(block, {{"127.0.0.1:50051", server_->target()}}));
    const std::string path = absl::StrCat(
        std::filesystem::path(kBufBinary).parent_path().string(), ":",
        std::filesystem::path(kAttnctlBinary).parent_path().string(),
        ":/usr/bin:/bin");
    absl::StatusOr<ProcessResult> r = RunProcess(
        {"/bin/bash", "-c", script}, kRunTimeout,
        {"PATH=" + path,
         absl::StrCat("BUF_CACHE_DIR=", ::testing::TempDir(), "/buf-cache")});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << Describe(*r);
    EXPECT_THAT(r->out + r->err, Not(HasSubstr("command not found")));
  }
  EXPECT_GE(Metric("attnserve_tensor_gets_total"), 2);
}

// One PutTensor stream written piece by piece.
class Upload {
 public:
  Upload(v1::AttentionService::Stub& stub, int64_t elements) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(120));
    writer_ = stub.PutTensor(&context_, &response_);
    v1::PutTensorRequest first;
    first.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    first.mutable_tensor()->add_shape(elements);
    writer_->Write(first);
  }
  bool Send(const std::string& chunk) {
    v1::PutTensorRequest message;
    message.set_chunk(chunk);
    return writer_->Write(message);
  }
  grpc::Status Finish(bool close) {
    if (close) writer_->WritesDone();
    return writer_->Finish();
  }
  const v1::PutTensorResponse& response() const { return response_; }

 private:
  grpc::ClientContext context_;
  v1::PutTensorResponse response_;
  std::unique_ptr<grpc::ClientWriter<v1::PutTensorRequest>> writer_;
};

TEST(ResidentDrainE2eTest, SigtermLetsAnUploadFinishAndEndsOneThatStalls) {
  absl::StatusOr<int> metrics_port = PickFreePort();
  ASSERT_TRUE(metrics_port.ok());
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      kAttnserveBinary,
      {"--workers=1", "--drain_timeout=4s",
       absl::StrCat("--metrics_listen=127.0.0.1:", *metrics_port)});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::AttentionService::NewStub(grpc::CreateChannel(
      (*server)->target(), grpc::InsecureChannelCredentials()));
  constexpr int64_t kElements = 1 << 16;  // 256 KiB of fp32.
  const std::string bytes(kElements * 4, '\x3f');
  Upload finishing(*stub, kElements);
  Upload stalled(*stub, kElements);
  ASSERT_TRUE(finishing.Send(bytes.substr(0, 1000)));
  ASSERT_TRUE(stalled.Send(bytes.substr(0, 1000)));
  // Both uploads hold their declared size from their first message on.
  ASSERT_GE(AwaitMetricAtLeast(*metrics_port, "attnserve_tensor_store_bytes",
                               2 * kElements * 4, absl::Seconds(60)),
            2 * kElements * 4)
      << (*server)->log();

  const absl::Time signalled = absl::Now();
  (*server)->Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(300));
  // Opened before the signal: it may finish within the drain time.
  ASSERT_TRUE(finishing.Send(bytes.substr(1000)));
  const grpc::Status finished = finishing.Finish(/*close=*/true);
  EXPECT_TRUE(finished.ok()) << finished.error_message() << (*server)->log();
  EXPECT_EQ(finishing.response().bytes(), uint64_t{kElements} * 4);
  EXPECT_FALSE(finishing.response().handle().empty());
  // Never finished: ended when the drain's time is up, and the process
  // exits 0 soon after (nothing of it was stored).
  const grpc::Status ended = stalled.Finish(/*close=*/false);
  EXPECT_FALSE(ended.ok());
  const std::optional<int> exit_code =
      (*server)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(exit_code.has_value()) << "still running 60 s after SIGTERM";
  EXPECT_EQ(*exit_code, 0) << (*server)->log();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(4 + 20));
  EXPECT_THAT((*server)->log(), HasSubstr("PutTensor"));
}

}  // namespace
}  // namespace attnserve::e2e
