#include "server/request_limits.h"

#include <cstdint>
#include <initializer_list>
#include <string>

#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

void SetShape(v1::Tensor* tensor, std::initializer_list<int64_t> shape) {
  tensor->clear_shape();
  for (int64_t d : shape) tensor->add_shape(d);
}

v1::FlashAttentionScoreRequest Request() {
  v1::FlashAttentionScoreRequest r;
  SetShape(r.mutable_query(), {1, 2, 16, 8});
  SetShape(r.mutable_key(), {1, 2, 16, 8});
  SetShape(r.mutable_value(), {1, 2, 16, 8});
  return r;
}

TEST(RequestLimitsTest, TensorsWithinTheLimitPass) {
  EXPECT_THAT(CheckTensorLimits(Request(), 256), IsOk());
}

TEST(RequestLimitsTest, TooManyElementsNamesTheTensor) {
  v1::FlashAttentionScoreRequest r = Request();
  SetShape(r.mutable_value(), {1, 2, 16, 9});
  const absl::Status status = CheckTensorLimits(r, 256);
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("288 elements exceed the limit of 256")));
  EXPECT_EQ(core::FieldOf(status), "value.shape");
}

TEST(RequestLimitsTest, OverflowingProductIsRejectedNotWrapped) {
  v1::FlashAttentionScoreRequest r = Request();
  // 2^31 * 2^31 * 2^31 overflows int64; a wrapped product could look small.
  SetShape(r.mutable_query(),
           {int64_t{1} << 31, int64_t{1} << 31, int64_t{1} << 31, 4});
  EXPECT_THAT(CheckTensorLimits(r, INT64_MAX),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("more than 2^63 elements")));
}

TEST(RequestLimitsTest, HugeDimIsRejectedEvenWhenAnotherDimIsZero) {
  v1::FlashAttentionScoreRequest r = Request();
  SetShape(r.mutable_key(), {0, int64_t{1} << 40});
  const absl::Status status = CheckTensorLimits(r, 1 << 20);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("exceeds the limit")));
  EXPECT_EQ(core::FieldOf(status), "key.shape[1]");
}

TEST(RequestLimitsTest, NegativeDimIsRejected) {
  v1::FlashAttentionScoreRequest r = Request();
  SetShape(r.mutable_query(), {1, -2});
  EXPECT_THAT(
      CheckTensorLimits(r, 256),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be >= 0")));
}

TEST(RequestLimitsTest, NestedAndOptionalTensorsAreChecked) {
  v1::GetWorkspaceSizeRequest r;
  *r.mutable_flash_attention_score_grad()->mutable_query() = Request().query();
  SetShape(r.mutable_flash_attention_score_grad()->mutable_atten_mask(),
           {1024, 1024});
  const absl::Status status = CheckTensorLimits(r, 4096);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(core::FieldOf(status),
            "flash_attention_score_grad.atten_mask.shape");
}

TEST(RequestLimitsTest, RankAboveEightIsRefusedBeforeItsDimsAreRead) {
  v1::FlashAttentionScoreRequest r = Request();
  SetShape(r.mutable_query(), {1, 1, 1, 1, 1, 1, 1, 1});
  EXPECT_THAT(CheckTensorLimits(r, 256), IsOk());
  // A million dims of 1: within the element limit, but refused by rank, with
  // a message that does not echo them.
  r.mutable_query()->mutable_shape()->Resize(1 << 20, 1);
  const absl::Status status = CheckTensorLimits(r, 256);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("has rank 1048576")));
  EXPECT_EQ(core::FieldOf(status), "query.shape");
  EXPECT_LT(status.message().size(), 200u);
}

TEST(RequestLimitsTest, PerBatchListsAreBoundedByTheLargestBatch) {
  v1::FlashAttentionScoreRequest r = Request();
  r.mutable_actual_seq_qlen()->Resize(2 * 1024 * 1024, 1);
  EXPECT_THAT(CheckTensorLimits(r, 256), IsOk());
  r.mutable_actual_seq_qlen()->Add(1);
  const absl::Status status = CheckTensorLimits(r, 256);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("2097153 entries; at most 2097152")));
  EXPECT_EQ(core::FieldOf(status), "actual_seq_qlen");
  v1::GetWorkspaceSizeRequest nested;
  nested.mutable_nsa_selected_attention_grad()
      ->mutable_actual_seq_kvlen()
      ->Resize(2 * 1024 * 1024 + 1, 1);
  EXPECT_EQ(core::FieldOf(CheckTensorLimits(nested, 256)),
            "nsa_selected_attention_grad.actual_seq_kvlen");
}

TEST(RequestLimitsTest, LongStringsAreRefusedButTensorBytesAreNot) {
  v1::FlashAttentionScoreRequest r = Request();
  r.set_input_layout(std::string(256, 'B'));
  EXPECT_THAT(CheckTensorLimits(r, 256), IsOk());
  r.set_input_layout(std::string(257, 'B'));
  absl::Status status = CheckTensorLimits(r, 256);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("257 bytes; at most 256")));
  EXPECT_EQ(core::FieldOf(status), "input_layout");

  r = Request();
  r.mutable_key()->set_handle(std::string(300, 'h'));
  EXPECT_EQ(core::FieldOf(CheckTensorLimits(r, 256)), "key.handle");

  // Tensor data and upload chunks are bytes, bounded by the message limit.
  v1::PutTensorRequest put;
  SetShape(put.mutable_tensor(), {4096});
  put.set_chunk(std::string(4096, '\0'));
  EXPECT_THAT(CheckTensorLimits(put, 4096), IsOk());
}

}  // namespace
}  // namespace attnserve::server
