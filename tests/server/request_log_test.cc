#include "server/request_log.h"

#include "absl/strings/escaping.h"
#include "attnserve/core/client_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::FlashAttentionScoreRequest Request() {
  v1::FlashAttentionScoreRequest r;
  r.mutable_query()->set_dtype(v1::DATA_TYPE_FLOAT16);
  for (int64_t d : {2, 128, 8, 64}) r.mutable_query()->add_shape(d);
  for (int64_t d : {2, 256, 2, 64}) r.mutable_key()->add_shape(d);
  for (int64_t d : {2, 256, 2, 32}) r.mutable_value()->add_shape(d);
  r.set_input_layout("BSND");
  return r;
}

TEST(RequestLogTest, LineHoldsShapesDtypeLayoutStatusAndTimings) {
  RequestRecord record = RecordOf("FlashAttentionScore", Request());
  record.queue_seconds = 0.0015;
  record.compute_seconds = 0.5;
  record.flops = 2e9;
  const std::string line = FormatRequestLine(record);
  EXPECT_EQ(line,
            "FlashAttentionScore q=[2,128,8,64] k=[2,256,2,64] "
            "v=[2,256,2,32] dtype=FLOAT16 layout=BSND status=OK "
            "queue_ms=1.500 compute_ms=500.000 gflops=4.00");
}

TEST(RequestLogTest, ClientStringsCannotForgeLinesOrFieldsOrFloodThem) {
  v1::FlashAttentionScoreRequest request = Request();
  request.set_input_layout("BSND status=OK\nFlashAttentionScore q=[1]");
  request.mutable_key()->mutable_shape()->Resize(100000, 1);
  const std::string line =
      FormatRequestLine(RecordOf("FlashAttentionScore", request));
  EXPECT_THAT(line, Not(HasSubstr("\n")));
  // The first 32 bytes, escaped: the space and the newline cannot start a
  // field or a line.
  EXPECT_THAT(line, HasSubstr("layout=BSND\\x20status=OK\\nFlashAttentionSco"
                              "...(40 bytes) status=OK"));
  EXPECT_THAT(line, HasSubstr("k=[2,256,2,64,1,1,1,1,...] (rank 100000) v="));
  EXPECT_LT(line.size(), 400u);
  const std::string json =
      FormatRequestJsonFields(RecordOf("FlashAttentionScore", request));
  EXPECT_THAT(json, Not(HasSubstr("\n")));
}

// Found by the log fuzzer: a space became \x20 after the escaping, so a hex
// digit after it read as part of the escape (" a" gave \x20a, 0x20a to a C
// reader). Every escape reads back as the bytes sent.
TEST(RequestLogTest, ClientTextReadsBackAsTheBytesSent) {
  EXPECT_EQ(core::ClientText(" a"), "\\x20\\x61");
  EXPECT_EQ(core::ClientText("\x01"
                             "f\x80"
                             "0 g"),
            "\\x01\\x66\\x80\\x30\\x20g");
  using std::string_literals::operator""s;
  for (const std::string& sent : {" a"s, "BSND F"s,
                                  "\x7f"
                                  "b\"c'"s,
                                  "\0"
                                  "1\t2\n3\r"s,
                                  "\xff"
                                  "e\xc3\xa9"s}) {
    std::string read;
    ASSERT_TRUE(absl::CUnescape(core::ClientText(sent), &read))
        << core::ClientText(sent);
    EXPECT_EQ(read, sent) << core::ClientText(sent);
  }
}

TEST(RequestLogTest, FailedRequestShowsCodeAndMessage) {
  RequestRecord record =
      RecordOf("FlashAttentionScoreGrad", v1::FlashAttentionScoreGradRequest());
  SetOutcome(absl::InvalidArgumentError("head_num: must be >= 1"), &record);
  const std::string line = FormatRequestLine(record);
  EXPECT_THAT(line, HasSubstr("FlashAttentionScoreGrad q=[] k=[] v=[]"));
  EXPECT_THAT(line, HasSubstr("dtype=UNSPECIFIED layout=-"));
  EXPECT_THAT(line, HasSubstr("status=INVALID_ARGUMENT"));
  EXPECT_THAT(line, HasSubstr("gflops=0.00"));
  EXPECT_THAT(line, HasSubstr("error=\"head_num: must be >= 1\""));
}

TEST(RequestLogTest, SuccessfulRequestHasNoErrorPart) {
  RequestRecord record = RecordOf("FlashAttentionScore", Request());
  SetOutcome(absl::OkStatus(), &record);
  EXPECT_THAT(FormatRequestLine(record), Not(HasSubstr("error=")));
}

TEST(RequestLogTest, UnknownDtypeIsShownAsItsNumber) {
  v1::FlashAttentionScoreRequest r = Request();
  r.mutable_query()->set_dtype(static_cast<v1::DataType>(42));
  EXPECT_THAT(FormatRequestLine(RecordOf("FlashAttentionScore", r)),
              HasSubstr("dtype=?42 "));
}

TEST(RequestLogTest, ScheduledRequestShowsItsLane) {
  RequestRecord record = RecordOf("FlashAttentionScore", Request());
  EXPECT_THAT(FormatRequestLine(record), Not(HasSubstr("lane=")));
  record.scheduled = true;
  EXPECT_THAT(FormatRequestLine(record), HasSubstr(" lane=small"));
  record.large = true;
  EXPECT_THAT(FormatRequestLine(record), HasSubstr(" lane=large"));
  EXPECT_THAT(FormatRequestJsonFields(record), HasSubstr("\"lane\":\"large\""));
}

}  // namespace
}  // namespace attnserve::server
