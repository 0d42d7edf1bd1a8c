// The start-up warnings of an exposed configuration, and the default memory
// budget taken from the machine.
#include "server/startup_warnings.h"

#include <unistd.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/machine.h"
#include "server/server.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace attnserve::server {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;

TEST(LoopbackAddressTest, RecognizesLoopbackAndUnixAddresses) {
  for (const char* a :
       {"127.0.0.1:50051", "127.1.2.3:0", "[::1]:50051", "localhost:50051",
        "LOCALHOST:1", "unix:/tmp/a.sock", "unix-abstract:attnserve"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a :
       {"0.0.0.0:50051", "[::]:50051", "10.0.0.7:50051", "example.com:443",
        "[2001:db8::1]:50051", ":50051", "128.0.0.1:1", "[::1"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

ServerOptions Exposed() {
  ServerOptions o;
  o.listen_address = "0.0.0.0:50051";
  o.memory_budget_bytes = 1 << 30;
  return o;
}

TEST(StartupWarningsTest, DefaultListenAddressWithoutTlsOrTokensWarns) {
  ServerOptions o;  // The production defaults.
  ASSERT_EQ(o.listen_address, "0.0.0.0:50051");
  const std::vector<std::string> w = StartupWarnings(o);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_THAT(
      w[0],
      AllOf(HasSubstr("0.0.0.0:50051"), HasSubstr("plaintext"),
            HasSubstr("without authentication"), HasSubstr("--tls_cert"),
            HasSubstr("--auth_token_file"), HasSubstr("--listen=127.0.0.1")));
}

TEST(StartupWarningsTest, TokensOverPlaintextWarnThatTheyTravelInClear) {
  ServerOptions o = Exposed();
  o.auth_token_file = "/etc/attnserve/tokens";
  EXPECT_THAT(StartupWarnings(o),
              ElementsAre(AllOf(HasSubstr("travel in clear"),
                                HasSubstr("--tls_cert"))));
}

TEST(StartupWarningsTest, TlsWithoutTokensOrClientCertificatesWarns) {
  ServerOptions o = Exposed();
  o.tls_cert_file = "cert.pem";
  o.tls_key_file = "key.pem";
  EXPECT_THAT(StartupWarnings(o),
              ElementsAre(AllOf(HasSubstr("without bearer tokens"),
                                HasSubstr("--auth_token_file"))));
  o.tls_client_ca_file = "ca.pem";
  EXPECT_THAT(StartupWarnings(o), IsEmpty());
  o.tls_client_ca_file.clear();
  o.auth_token_file = "tokens";
  EXPECT_THAT(StartupWarnings(o), IsEmpty());
}

TEST(StartupWarningsTest, LoopbackIsQuiet) {
  ServerOptions o = Exposed();
  o.listen_address = "127.0.0.1:0";
  EXPECT_THAT(StartupWarnings(o), IsEmpty());
}

TEST(StartupWarningsTest, UnlimitedMemoryBudgetWarnsEvenOnLoopback) {
  ServerOptions o = Exposed();
  o.listen_address = "127.0.0.1:0";
  o.memory_budget_bytes = 0;
  EXPECT_THAT(StartupWarnings(o),
              ElementsAre(HasSubstr("--memory_budget_bytes=0")));
}

TEST(MemoryBudgetTest, ParsesCgroupLimits) {
  EXPECT_EQ(ParseCgroupMemoryLimit("max\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit(""), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("0\n"), std::nullopt);
  EXPECT_THAT(ParseCgroupMemoryLimit("1073741824\n"),
              Optional(uint64_t{1} << 30));
  EXPECT_THAT(ParseCgroupMemoryLimit("9223372036854771712\n"),
              Optional(uint64_t{9223372036854771712u}));
}

TEST(MemoryBudgetTest, FindsTheProcesssCgroupLimitFile) {
  EXPECT_EQ(CgroupLimitFile("0::/system.slice/attnserve.service").path,
            "/sys/fs/cgroup/system.slice/attnserve.service/memory.max");
  EXPECT_EQ(CgroupLimitFile("4:memory:/docker/abc").path,
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes");
  EXPECT_EQ(CgroupLimitFile("3:cpu,memory:/x").path,
            "/sys/fs/cgroup/memory/x/memory.limit_in_bytes");
  EXPECT_EQ(CgroupLimitFile("2:cpu:/x").path, "");
  EXPECT_EQ(CgroupLimitFile("0::/").path, "");
  EXPECT_EQ(CgroupLimitFile("0::/../etc").path, "");
  EXPECT_EQ(CgroupLimitFile("garbage").path, "");
}

TEST(MemoryBudgetTest, IsTheShareOfTheSmallerOfMemoryAndCgroupLimit) {
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  EXPECT_EQ(MemoryBudgetFor(10 * kGiB, std::nullopt), 4 * kGiB);
  EXPECT_EQ(MemoryBudgetFor(10 * kGiB, 5 * kGiB), 2 * kGiB);
  // cgroup v1 reports "no limit" as a huge number.
  EXPECT_EQ(MemoryBudgetFor(10 * kGiB, uint64_t{9223372036854771712u}),
            4 * kGiB);
  EXPECT_EQ(MemoryBudgetFor(0, std::nullopt), 0u);  // Unknown: unlimited.
}

TEST(MemoryBudgetTest, DefaultIsBoundedAndIsTheServersDefault) {
  const uint64_t physical = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                            static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  const uint64_t budget = DefaultMemoryBudget();
  EXPECT_GT(budget, 0u);
  EXPECT_LE(budget,
            static_cast<uint64_t>(physical * kDefaultMemoryBudgetShare));
  EXPECT_EQ(ServerOptions().memory_budget_bytes, budget);
}

// A started server says it, once, as a warning.
std::string StartAndCaptureLog(const std::string& listen) {
  std::ostringstream out;
  const std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::ostream_sink_mt>(out)));
  {
    ServerOptions options;
    options.listen_address = listen;
    options.workers = 1;
    Server server(options);
    const absl::Status started = server.Start();
    EXPECT_TRUE(started.ok()) << started;
    server.Shutdown(absl::ZeroDuration());
  }
  spdlog::set_default_logger(previous);
  return out.str();
}

TEST(StartupWarningsTest, ServerLogsThemAtStartUp) {
  const std::string exposed = StartAndCaptureLog("0.0.0.0:0");
  EXPECT_THAT(exposed, AllOf(HasSubstr("[warning]"),
                             HasSubstr("without authentication")));
  EXPECT_THAT(StartAndCaptureLog("127.0.0.1:0"),
              ::testing::Not(HasSubstr("without authentication")));
}

}  // namespace
}  // namespace attnserve::server
