// Log configuration and the JSON form of log lines.
#include "server/logging.h"

#include <memory>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/request_log.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// Points the default logger at a string stream for one test.
class CapturedLog {
 public:
  CapturedLog() {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("", sink));
  }
  ~CapturedLog() {
    spdlog::set_default_logger(previous_);
    EXPECT_THAT(ConfigureLogging("info", "text"), IsOk());
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST(LoggingTest, UnknownLevelOrFormatNamesTheFlag) {
  EXPECT_THAT(
      ConfigureLogging("loud", "text"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("log_level")));
  EXPECT_THAT(
      ConfigureLogging("info", "xml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("log_format")));
}

TEST(LoggingTest, JsonEscapeHandlesQuotesControlsAndBadUtf8) {
  EXPECT_EQ(JsonEscape("a\"b\\c\n\t\x01"), "a\\\"b\\\\c\\n\\t\\u0001");
  EXPECT_EQ(JsonEscape("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(JsonEscape("bad\xFFz"), "bad\xEF\xBF\xBDz");
}

// Found by the log fuzzer: lead bytes were checked, the second byte's range
// was not, so surrogates, overlong forms and code points above U+10FFFF went
// out as they came (invalid UTF-8 in the JSON log). Each of their bytes is
// now U+FFFD; the largest valid sequences pass.
TEST(LoggingTest, JsonEscapeReplacesSurrogatesOverlongFormsAndBeyondUnicode) {
  const std::string bad = "\xEF\xBF\xBD";
  EXPECT_EQ(JsonEscape("\xED\xA0\x80"), bad + bad + bad);  // U+D800
  EXPECT_EQ(JsonEscape("\xE0\x80\xAF"), bad + bad + bad);  // Overlong '/'
  EXPECT_EQ(JsonEscape("\xF0\x80\x80\xAF"), bad + bad + bad + bad);
  EXPECT_EQ(JsonEscape("\xF4\x90\x80\x80"), bad + bad + bad + bad);
  EXPECT_EQ(
      JsonEscape("\xED\x9F\xBF\xE0\xA0\x80\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"),
      "\xED\x9F\xBF\xE0\xA0\x80\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
}

TEST(LoggingTest, JsonFormatWritesOneObjectPerLine) {
  CapturedLog log;
  ASSERT_THAT(ConfigureLogging("info", "json"), IsOk());
  spdlog::info("listening on \"{}\"", 5);
  EXPECT_THAT(
      log.text(),
      MatchesRegex("\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\","
                   "\"level\":\"info\",\"logger\":\"attnserve\","
                   "\"msg\":\"listening on \\\\\"5\\\\\"\"\\}\n"));
}

TEST(LoggingTest, JsonRequestRecordHasItsFieldsAtTopLevel) {
  CapturedLog log;
  ASSERT_THAT(ConfigureLogging("info", "json"), IsOk());
  RequestRecord record;
  record.op = "FlashAttentionScore";
  record.request_id = "req-42";
  record.code = absl::StatusCode::kResourceExhausted;
  record.error = "queue \"full\"";
  LogRequest(record);
  const std::string line = log.text();
  EXPECT_THAT(line, HasSubstr("\"level\":\"warning\",\"logger\":\"request\","
                              "\"request_id\":\"req-42\","
                              "\"op\":\"FlashAttentionScore\""));
  EXPECT_THAT(line, HasSubstr("\"status\":\"RESOURCE_EXHAUSTED\""));
  EXPECT_THAT(line, HasSubstr("\"error\":\"queue \\\"full\\\"\"}"));
}

TEST(LoggingTest, TextRequestLineCarriesTheRequestId) {
  CapturedLog log;
  ASSERT_THAT(ConfigureLogging("info", "text"), IsOk());
  RequestRecord record;
  record.op = "GetServerInfo";
  record.request_id = "req-7";
  LogRequest(record);
  EXPECT_THAT(log.text(), HasSubstr("[request] [info] GetServerInfo "
                                    "request_id=req-7 "));
}

TEST(LoggingTest, LevelFiltersRequestLines) {
  CapturedLog log;
  ASSERT_THAT(ConfigureLogging("warn", "text"), IsOk());
  RequestRecord ok;
  ok.op = "GetServerInfo";
  LogRequest(ok);
  EXPECT_EQ(log.text(), "");
}

}  // namespace
}  // namespace attnserve::server
