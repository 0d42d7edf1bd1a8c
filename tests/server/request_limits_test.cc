#include "server/request_limits.h"

#include <cstdint>
#include <initializer_list>

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

}  // namespace
}  // namespace attnserve::server
