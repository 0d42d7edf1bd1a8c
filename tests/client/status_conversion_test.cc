#include "attnserve/client/status_conversion.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"

namespace attnserve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::IsEmpty;

// Serialized google.rpc.Status holding one BadRequest with `fields`.
std::string BadRequestDetails(
    const std::vector<std::pair<std::string, std::string>>& fields) {
  google::rpc::BadRequest bad_request;
  for (const auto& [field, description] : fields) {
    auto* v = bad_request.add_field_violations();
    v->set_field(field);
    v->set_description(description);
  }
  google::rpc::Status details;
  details.set_code(grpc::StatusCode::INVALID_ARGUMENT);
  details.set_message("bad request");
  details.add_details()->PackFrom(bad_request);
  return details.SerializeAsString();
}

auto Violation(const std::string& field, const std::string& description) {
  return AllOf(Field(&FieldViolation::field, field),
               Field(&FieldViolation::description, description));
}

TEST(FromGrpcStatusTest, OkBecomesOk) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(FromGrpcStatusTest, KeepsEveryCanonicalCodeAndMessage) {
  for (int code = 1; code <= 16; ++code) {
    const grpc::Status status(static_cast<grpc::StatusCode>(code),
                              "message " + std::to_string(code));
    const absl::Status converted = FromGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(converted.code()), code);
    EXPECT_EQ(converted.message(), "message " + std::to_string(code));
    EXPECT_THAT(FieldViolations(converted), IsEmpty());
    EXPECT_FALSE(converted.GetPayload(kRpcStatusPayloadUrl).has_value());
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                        "queue full"))
                .code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(FromGrpcStatusTest, BadRequestViolationsStayReachable) {
  const std::string details =
      BadRequestDetails({{"head_num", "must equal query heads 8, got 3"},
                         {"key.shape[1]", "must divide query heads"}});
  const absl::Status converted = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                   "head_num: must equal query heads 8, got 3", details));
  EXPECT_EQ(converted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      FieldViolations(converted),
      ElementsAre(Violation("head_num", "must equal query heads 8, got 3"),
                  Violation("key.shape[1]", "must divide query heads")));
  ASSERT_TRUE(converted.GetPayload(kRpcStatusPayloadUrl).has_value());
  EXPECT_EQ(std::string(*converted.GetPayload(kRpcStatusPayloadUrl)), details);
}

TEST(FromGrpcStatusTest, AppendsViolatedFieldsMissingFromTheMessage) {
  const absl::Status converted = FromGrpcStatus(grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT, "head_num: wrong",
      BadRequestDetails({{"head_num", "wrong"}, {"query.dtype", "wrong"}})));
  EXPECT_EQ(converted.message(), "head_num: wrong [field: query.dtype]");
}

TEST(FromGrpcStatusTest, IgnoresDetailsThatAreNotBadRequest) {
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(1);
  google::rpc::Status details;
  details.add_details()->PackFrom(retry);
  const absl::Status converted = FromGrpcStatus(grpc::Status(
      grpc::StatusCode::UNAVAILABLE, "draining", details.SerializeAsString()));
  EXPECT_EQ(converted.message(), "draining");
  EXPECT_THAT(FieldViolations(converted), IsEmpty());
}

TEST(FromGrpcStatusTest, IgnoresUnparseableDetails) {
  const absl::Status converted = FromGrpcStatus(grpc::Status(
      grpc::StatusCode::INTERNAL, "oops", std::string("\xff\xff\xff", 3)));
  EXPECT_EQ(converted.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(converted.message(), "oops");
  EXPECT_THAT(FieldViolations(converted), IsEmpty());
}

TEST(FieldViolationsTest, EmptyForPlainAbslStatus) {
  EXPECT_THAT(FieldViolations(absl::InvalidArgumentError("x")), IsEmpty());
  EXPECT_THAT(FieldViolations(absl::OkStatus()), IsEmpty());
}

}  // namespace
}  // namespace attnserve
