#include "server/status_mapping.h"

#include <optional>

#include "attnserve/core/status_macros.h"
#include "gmock/gmock.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace attnserve::server {
namespace {

TEST(StatusMappingTest, OkStaysOk) {
  grpc::Status status = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(status.ok());
  EXPECT_TRUE(status.error_details().empty());
}

TEST(StatusMappingTest, InvalidArgumentCarriesBadRequestNamingTheField) {
  const absl::Status source =
      core::InvalidField("key.dtype", "must be FLOAT32 (same as query)");
  grpc::Status status = ToGrpcStatus(source);

  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), source.message());

  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  EXPECT_EQ(details.code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(details.message(), source.message());
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::BadRequest bad_request;
  ASSERT_TRUE(details.details(0).UnpackTo(&bad_request));
  ASSERT_EQ(bad_request.field_violations_size(), 1);
  EXPECT_EQ(bad_request.field_violations(0).field(), "key.dtype");
  EXPECT_EQ(bad_request.field_violations(0).description(),
            "must be FLOAT32 (same as query)");

  std::optional<google::rpc::BadRequest> decoded = BadRequestOf(status);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->field_violations(0).field(), "key.dtype");
}

TEST(StatusMappingTest, InvalidArgumentWithoutFieldStillCarriesDetails) {
  grpc::Status status =
      ToGrpcStatus(absl::InvalidArgumentError("something is off"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::optional<google::rpc::BadRequest> decoded = BadRequestOf(status);
  ASSERT_TRUE(decoded.has_value());
  ASSERT_EQ(decoded->field_violations_size(), 1);
  EXPECT_EQ(decoded->field_violations(0).field(), "");
  EXPECT_EQ(decoded->field_violations(0).description(), "something is off");
}

TEST(StatusMappingTest, OtherCodesMapOneToOneWithoutDetails) {
  const struct {
    absl::Status in;
    grpc::StatusCode want;
  } cases[] = {
      {absl::CancelledError("c"), grpc::StatusCode::CANCELLED},
      {absl::UnknownError("u"), grpc::StatusCode::UNKNOWN},
      {absl::DeadlineExceededError("d"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::NotFoundError("n"), grpc::StatusCode::NOT_FOUND},
      {absl::AlreadyExistsError("a"), grpc::StatusCode::ALREADY_EXISTS},
      {absl::PermissionDeniedError("p"), grpc::StatusCode::PERMISSION_DENIED},
      {absl::ResourceExhaustedError("r"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::FailedPreconditionError("f"),
       grpc::StatusCode::FAILED_PRECONDITION},
      {absl::AbortedError("ab"), grpc::StatusCode::ABORTED},
      {absl::OutOfRangeError("o"), grpc::StatusCode::OUT_OF_RANGE},
      {core::UnimplementedField("input_layout", "TND"),
       grpc::StatusCode::UNIMPLEMENTED},
      {absl::InternalError("i"), grpc::StatusCode::INTERNAL},
      {absl::UnavailableError("un"), grpc::StatusCode::UNAVAILABLE},
      {absl::DataLossError("dl"), grpc::StatusCode::DATA_LOSS},
      {absl::UnauthenticatedError("ua"), grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const auto& c : cases) {
    grpc::Status status = ToGrpcStatus(c.in);
    EXPECT_EQ(status.error_code(), c.want) << c.in;
    EXPECT_EQ(status.error_message(), c.in.message());
    EXPECT_TRUE(status.error_details().empty()) << c.in;
    EXPECT_FALSE(BadRequestOf(status).has_value());
  }
}

TEST(StatusMappingTest, NestFieldPrefixesFieldAndMessage) {
  absl::Status nested = NestField(
      core::InvalidField("query.data", "has 3 bytes"), "flash_attention_score");
  EXPECT_EQ(nested.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core::FieldOf(nested), "flash_attention_score.query.data");
  EXPECT_EQ(nested.message(), "flash_attention_score.query.data: has 3 bytes");
}

TEST(StatusMappingTest, NestFieldLeavesOtherStatusesAlone) {
  const absl::Status unimplemented =
      core::UnimplementedField("input_layout", "TND");
  EXPECT_EQ(NestField(unimplemented, "op"), unimplemented);
  const absl::Status plain = absl::InvalidArgumentError("no field");
  EXPECT_EQ(NestField(plain, "op"), plain);
  EXPECT_TRUE(NestField(absl::OkStatus(), "op").ok());
}

}  // namespace
}  // namespace attnserve::server
