// TLS, mutual TLS and bearer tokens on the real process, driven by attnctl
// and the client library. Certificates are made with openssl when the suite
// starts. Right credentials pass; wrong ones fail with the fitting status.
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/client/client.h"
#include "attnserve/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/test_pki.h"

namespace attnserve::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kGoodToken[] = "good-token-0123456789abcdef";
constexpr char kInfoOnlyToken[] = "info-only-token-0123456789";

class SecurityE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir =
        absl::StrCat(::testing::TempDir(), "/attnserve-pki-", getpid());
    absl::StatusOr<TestPki> pki = MakeTestPki(kOpensslBinary, dir);
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = new TestPki(*pki);
    tokens_ = new std::string(dir + "/tokens");
    std::ofstream(*tokens_) << "# test tokens\n"
                            << kGoodToken << "\n"
                            << kInfoOnlyToken << " GetServerInfo\n";
    good_token_file_ = new std::string(dir + "/good.token");
    std::ofstream(*good_token_file_) << kGoodToken << "\n";
    bad_token_file_ = new std::string(dir + "/bad.token");
    std::ofstream(*bad_token_file_) << "wrong-token-0123456789abcdef\n";
    info_token_file_ = new std::string(dir + "/info.token");
    std::ofstream(*info_token_file_) << kInfoOnlyToken << "\n";
  }

  // Starts attnserve with `args`; the health probe uses `probe`.
  void StartServer(const std::vector<std::string>& args,
                   const TlsOptions& probe) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(kAttnserveBinary, args, absl::Seconds(60), probe);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << server_->log();
    }
  }

  std::vector<std::string> TlsServerArgs() const {
    return {"--workers=1", "--tls_cert=" + pki_->server_cert,
            "--tls_key=" + pki_->server_key};
  }

  static TlsOptions TrustingOurCa() {
    TlsOptions tls = TlsFromFiles(pki_->ca_cert, "", "").value();
    return tls;
  }

  static TlsOptions WithClientCert(const std::string& cert,
                                   const std::string& key) {
    return TlsFromFiles(pki_->ca_cert, cert, key).value();
  }

  ProcessResult Attnctl(std::vector<std::string> args) {
    args.insert(args.begin(), {kAttnctlBinary});
    args.push_back("--target=" + server_->target());
    args.push_back("--timeout=20s");
    absl::StatusOr<ProcessResult> r = RunProcess(args, kRunTimeout);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProcessResult{};
  }

  absl::Status InfoWith(const ClientOptions& options) {
    absl::StatusOr<Client> client = Client::Connect(server_->target(), options);
    if (!client.ok()) return client.status();
    return client->GetServerInfo(absl::Seconds(10)).status();
  }

  static TestPki* pki_;
  static std::string* tokens_;
  static std::string* good_token_file_;
  static std::string* bad_token_file_;
  static std::string* info_token_file_;
  std::unique_ptr<ServerProcess> server_;
};

TestPki* SecurityE2eTest::pki_ = nullptr;
std::string* SecurityE2eTest::tokens_ = nullptr;
std::string* SecurityE2eTest::good_token_file_ = nullptr;
std::string* SecurityE2eTest::bad_token_file_ = nullptr;
std::string* SecurityE2eTest::info_token_file_ = nullptr;

TEST_F(SecurityE2eTest, TlsServerServesTlsClientsOnly) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsServerArgs(), TrustingOurCa()));
  const ProcessResult ok =
      Attnctl({"forward", "--tls_ca=" + pki_->ca_cert, "-s", "32", "-d", "16"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_THAT(ok.out, HasSubstr("attention_out: shape=[1,8,32,16]"));

  // The certificate names 127.0.0.1 and localhost, not another host.
  const ProcessResult wrong_name =
      Attnctl({"info", "--tls_ca=" + pki_->ca_cert,
               "--tls_server_name=attn.example.com"});
  EXPECT_EQ(wrong_name.exit_code, 1) << Describe(wrong_name);

  ClientOptions plaintext;
  EXPECT_EQ(InfoWith(plaintext).code(), absl::StatusCode::kUnavailable);
  ClientOptions other_ca;
  other_ca.tls = TlsFromFiles(pki_->other_ca_cert, "", "").value();
  EXPECT_EQ(InfoWith(other_ca).code(), absl::StatusCode::kUnavailable);
}

TEST_F(SecurityE2eTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  std::vector<std::string> args = TlsServerArgs();
  args.push_back("--tls_client_ca=" + pki_->ca_cert);
  ASSERT_NO_FATAL_FAILURE(
      StartServer(args, WithClientCert(pki_->client_cert, pki_->client_key)));

  const ProcessResult ok = Attnctl({"info", "--tls_ca=" + pki_->ca_cert,
                                    "--tls_cert=" + pki_->client_cert,
                                    "--tls_key=" + pki_->client_key});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);

  const ProcessResult no_cert = Attnctl({"info", "--tls_ca=" + pki_->ca_cert});
  EXPECT_EQ(no_cert.exit_code, 1) << Describe(no_cert);
  EXPECT_THAT(no_cert.err, HasSubstr("UNAVAILABLE"));

  ClientOptions rogue;
  rogue.tls = WithClientCert(pki_->rogue_client_cert, pki_->rogue_client_key);
  EXPECT_EQ(InfoWith(rogue).code(), absl::StatusCode::kUnavailable);
  ClientOptions good;
  good.tls = WithClientCert(pki_->client_cert, pki_->client_key);
  EXPECT_TRUE(InfoWith(good).ok());
}

TEST_F(SecurityE2eTest, TokensGuardTheAttentionRpcsButNotHealth) {
  std::vector<std::string> args = TlsServerArgs();
  args.push_back("--auth_token_file=" + *tokens_);
  ASSERT_NO_FATAL_FAILURE(StartServer(args, TrustingOurCa()));
  const std::string ca = "--tls_ca=" + pki_->ca_cert;

  const ProcessResult ok =
      Attnctl({"forward", ca, "--token_file=" + *good_token_file_, "-s", "16",
               "-d", "8"});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);

  const ProcessResult missing = Attnctl({"info", ca});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("UNAUTHENTICATED"));

  const ProcessResult wrong =
      Attnctl({"info", ca, "--token_file=" + *bad_token_file_});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.err, HasSubstr("UNAUTHENTICATED"));

  const ProcessResult info_only =
      Attnctl({"info", ca, "--token_file=" + *info_token_file_});
  EXPECT_EQ(info_only.exit_code, 0) << Describe(info_only);
  const ProcessResult denied =
      Attnctl({"forward", ca, "--token_file=" + *info_token_file_, "-s", "16",
               "-d", "8"});
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_THAT(denied.err, HasSubstr("PERMISSION_DENIED"));

  // Probes need no token.
  const ProcessResult health = Attnctl({"health", ca});
  EXPECT_EQ(health.exit_code, 0) << Describe(health);
  EXPECT_THAT(health.out, HasSubstr("SERVING"));

  // The client library's bearer_token option.
  ClientOptions with_token;
  with_token.tls = TrustingOurCa();
  with_token.bearer_token = kGoodToken;
  EXPECT_TRUE(InfoWith(with_token).ok());
}

TEST_F(SecurityE2eTest, TokenlessCallsOverTlsAreRefusedBeforeTheirBodyIsRead) {
  std::vector<std::string> args = TlsServerArgs();
  args.push_back("--auth_token_file=" + *tokens_);
  ASSERT_NO_FATAL_FAILURE(StartServer(args, TrustingOurCa()));
  // A 256 MiB forward request (its value tensor): received and parsed, it
  // would take the server's peak memory up by at least its size.
  v1::FlashAttentionScoreRequest big;
  for (v1::Tensor* t : {big.mutable_query(), big.mutable_key()}) {
    t->set_dtype(v1::DATA_TYPE_FLOAT32);
    for (int64_t d : {1, 1, 4, 8}) t->add_shape(d);
    t->set_data(std::string(4 * 8 * 4, '\0'));
  }
  big.mutable_value()->set_dtype(v1::DATA_TYPE_FLOAT32);
  for (int64_t d : {1, 1, 1 << 23, 8}) big.mutable_value()->add_shape(d);
  big.mutable_value()->set_data(std::string(size_t{256} << 20, '\0'));
  big.set_head_num(1);
  big.set_input_layout("BNSD");

  const int64_t peak_before = server_->PeakRssBytes();
  ClientOptions anonymous;
  anonymous.tls = TrustingOurCa();
  ClientOptions wrong = anonymous;
  wrong.bearer_token = "wrong-token-0123456789abcdef";
  ClientOptions info_only = anonymous;
  info_only.bearer_token = kInfoOnlyToken;
  const struct {
    const ClientOptions* options;
    absl::StatusCode code;
  } callers[] = {{&anonymous, absl::StatusCode::kUnauthenticated},
                 {&wrong, absl::StatusCode::kUnauthenticated},
                 {&info_only, absl::StatusCode::kPermissionDenied}};
  for (const auto& caller : callers) {
    absl::StatusOr<Client> client =
        Client::Connect(server_->target(), *caller.options);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_EQ(
        client->FlashAttentionScore(big, absl::Seconds(60)).status().code(),
        caller.code);
  }
  const int64_t grown = server_->PeakRssBytes() - peak_before;
  EXPECT_LT(grown, int64_t{64} << 20)
      << "peak RSS grew by " << (grown >> 20) << " MiB for refused calls";

  // The right token still gets in, and health needs none.
  ClientOptions good = anonymous;
  good.bearer_token = kGoodToken;
  EXPECT_TRUE(InfoWith(good).ok());
  const ProcessResult health = Attnctl({"health", "--tls_ca=" + pki_->ca_cert});
  EXPECT_EQ(health.exit_code, 0) << Describe(health);
}

TEST_F(SecurityE2eTest, ACompressedBombIsRefusedWithoutInflatingIt) {
  ASSERT_NO_FATAL_FAILURE(StartServer(
      {"--workers=1", "--max_message_bytes=1048576"}, TlsOptions{}));
  // 256 MiB of zeros: a few hundred KiB once gzip-compressed, far past the
  // message limit once inflated.
  v1::FlashAttentionScoreRequest bomb;
  bomb.mutable_value()->set_dtype(v1::DATA_TYPE_FLOAT32);
  bomb.mutable_value()->set_data(std::string(size_t{256} << 20, '\0'));
  auto stub = v1::AttentionService::NewStub(grpc::CreateChannel(
      server_->target(), grpc::InsecureChannelCredentials()));
  const int64_t peak_before = server_->PeakRssBytes();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  v1::FlashAttentionScoreResponse response;
  const grpc::Status status =
      stub->FlashAttentionScore(&context, bomb, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("gzip"));
  const int64_t grown = server_->PeakRssBytes() - peak_before;
  EXPECT_LT(grown, int64_t{64} << 20)
      << "peak RSS grew by " << (grown >> 20) << " MiB; status "
      << status.error_code() << " " << status.error_message();
  ClientOptions plain;
  EXPECT_TRUE(InfoWith(plain).ok());
}

TEST_F(SecurityE2eTest, TokensWorkOverPlaintextToo) {
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--workers=1", "--auth_token_file=" + *tokens_}, {}));
  const ProcessResult ok =
      Attnctl({"info", "--token_file=" + *good_token_file_});
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  const ProcessResult missing = Attnctl({"info"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("UNAUTHENTICATED"));
}

TEST_F(SecurityE2eTest, MisconfiguredTlsFailsToStartNamingTheFlag) {
  absl::StatusOr<ProcessResult> r =
      RunProcess({kAttnserveBinary, "--listen=127.0.0.1:0",
                  "--tls_cert=" + pki_->server_cert},
                 kRunTimeout);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->err, HasSubstr("tls_key"));
  r = RunProcess({kAttnserveBinary, "--listen=127.0.0.1:0",
                  "--tls_cert=/nonexistent.pem", "--tls_key=/nonexistent.key"},
                 kRunTimeout);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0);
  EXPECT_THAT(r->err, HasSubstr("/nonexistent.pem"));
}

// Hostile shapes and sizes get a clear status each; the process neither
// aborts nor allocates what the shapes claim.
TEST_F(SecurityE2eTest, HostileInputsAreRefusedAndTheServerStaysSmall) {
  ASSERT_NO_FATAL_FAILURE(StartServer(
      {"--workers=1", "--max_message_bytes=1048576"}, TlsOptions{}));
  absl::StatusOr<Client> client = Client::Connect(server_->target());
  ASSERT_TRUE(client.ok());
  const auto request_with_key_shape = [](std::vector<int64_t> shape) {
    v1::FlashAttentionScoreRequest r;
    for (v1::Tensor* t :
         {r.mutable_query(), r.mutable_key(), r.mutable_value()}) {
      t->set_dtype(v1::DATA_TYPE_FLOAT32);
      for (int64_t d : {1, 1, 4, 8}) t->add_shape(d);
      t->set_data(std::string(4 * 8 * 4, '\0'));
    }
    r.mutable_key()->clear_shape();
    for (int64_t d : shape) r.mutable_key()->add_shape(d);
    r.set_head_num(1);
    r.set_input_layout("BNSD");
    return r;
  };
  const struct {
    std::vector<int64_t> key_shape;
    absl::StatusCode code;
    const char* message;
  } cases[] = {
      // Claims 2^46 elements with 128 bytes of data.
      {{1, 1, int64_t{1} << 40, 64},
       absl::StatusCode::kInvalidArgument,
       "--max_tensor_elements"},
      // The product overflows 64 bits.
      {{1 << 28, 1 << 28, 1 << 28, 1},
       absl::StatusCode::kInvalidArgument,
       "more than 2^63 elements"},
      {{1, 1, -4, 8}, absl::StatusCode::kInvalidArgument, "must be >= 0"},
      // Within the limits but not matching the 128 bytes sent.
      {{1, 1, 1 << 20, 8}, absl::StatusCode::kInvalidArgument, "key.data"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<v1::FlashAttentionScoreResponse> r =
        client->FlashAttentionScore(request_with_key_shape(c.key_shape),
                                    absl::Seconds(10));
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
  }
  // Larger than --max_message_bytes.
  v1::FlashAttentionScoreRequest big = request_with_key_shape({1, 1, 4, 8});
  big.mutable_value()->set_data(std::string(2 << 20, '\0'));
  EXPECT_EQ(client->FlashAttentionScore(big, absl::Seconds(10)).status().code(),
            absl::StatusCode::kResourceExhausted);

  absl::StatusOr<ServingStatus> health = client->Health("", absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, ServingStatus::kServing);
  EXPECT_LT(server_->RssBytes(), int64_t{512} << 20);
}

}  // namespace
}  // namespace attnserve::e2e
