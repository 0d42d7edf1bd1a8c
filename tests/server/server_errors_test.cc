// Error paths through a real gRPC server: invalid requests come back as
// INVALID_ARGUMENT with a google.rpc.BadRequest naming the field; size limits
// as RESOURCE_EXHAUSTED; a deadline that passes in the queue as
// DEADLINE_EXCEEDED.
#include <string>
#include <vector>

#include "attnserve/core/allocation_faults.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/status_mapping.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::testing::HasSubstr;

v1::Tensor Zeros(const std::string& layout, const Bnsd& dims,
                 v1::DataType dtype = v1::DATA_TYPE_FLOAT32) {
  return Pack(layout, dims,
              std::vector<double>(static_cast<size_t>(dims.count()), 0.0),
              dtype);
}

// A valid BSND request: B=1, N=2, S=4, D=8.
v1::FlashAttentionScoreRequest ValidRequest() {
  v1::FlashAttentionScoreRequest r;
  const Bnsd dims{1, 2, 4, 8};
  *r.mutable_query() = Zeros("BSND", dims);
  *r.mutable_key() = Zeros("BSND", dims);
  *r.mutable_value() = Zeros("BSND", dims);
  r.set_head_num(2);
  r.set_input_layout("BSND");
  return r;
}

grpc::Status Forward(TestServer& server,
                     const v1::FlashAttentionScoreRequest& request,
                     bool with_deadline = true) {
  grpc::ClientContext context;
  if (with_deadline) SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  return server.stub().FlashAttentionScore(&context, request, &response);
}

// The field of the first BadRequest violation, or a description of what
// was found instead.
std::string ViolatedField(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    return "<code " + std::to_string(status.error_code()) + ": " +
           status.error_message() + ">";
  }
  std::optional<google::rpc::BadRequest> bad = BadRequestOf(status);
  if (!bad.has_value() || bad->field_violations_size() == 0) {
    return "<no BadRequest details>";
  }
  // The message reads "<field>: <rule>"; the violation splits the two.
  const auto& violation = bad->field_violations(0);
  EXPECT_EQ(violation.field() + ": " + violation.description(),
            status.error_message());
  return violation.field();
}

class ServerErrorsTest : public ::testing::Test {
 protected:
  TestServer server_;
};

TEST_F(ServerErrorsTest, ValidRequestSucceeds) {
  ASSERT_TRUE(server_.started());
  grpc::Status status = Forward(server_, ValidRequest());
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ServerErrorsTest, KeyHeadDimDifferentFromQueryNamesTheKeyShape) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  *r.mutable_key() = Zeros("BSND", Bnsd{1, 2, 4, 4});
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "key.shape[3]");
}

TEST_F(ServerErrorsTest, KeyBatchDifferentFromQueryNamesTheKeyShape) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  *r.mutable_key() = Zeros("BSND", Bnsd{2, 2, 4, 8});
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "key.shape[0]");
}

TEST_F(ServerErrorsTest, KeyDtypeDifferentFromQueryNamesTheKeyDtype) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  *r.mutable_key() = Zeros("BSND", Bnsd{1, 2, 4, 8}, v1::DATA_TYPE_FLOAT16);
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "key.dtype");
}

TEST_F(ServerErrorsTest, HeadNumNotMatchingTheQueryNamesHeadNum) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  r.set_head_num(3);
  const grpc::Status status = Forward(server_, r);
  EXPECT_EQ(ViolatedField(status), "head_num");
  EXPECT_THAT(status.error_message(), HasSubstr("got 3"));
}

TEST_F(ServerErrorsTest, ByteLengthNotMatchingTheShapeNamesTheData) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  r.mutable_value()->mutable_data()->pop_back();
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "value.data");
}

TEST_F(ServerErrorsTest, MissingQueryIsNamed) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  r.clear_query();
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "query");
}

TEST_F(ServerErrorsTest, UnspecifiedDtypeIsNamed) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  r.mutable_query()->set_dtype(v1::DATA_TYPE_UNSPECIFIED);
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "query.dtype");
}

TEST_F(ServerErrorsTest, UnknownLayoutNamesInputLayout) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  r.set_input_layout("NSBD");
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "input_layout");
}

TEST_F(ServerErrorsTest, GradWithWrongDyShapeNamesDy) {
  ASSERT_TRUE(server_.started());
  const v1::FlashAttentionScoreRequest f = ValidRequest();
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = f.query();
  *r.mutable_key() = f.key();
  *r.mutable_value() = f.value();
  *r.mutable_dy() = Zeros("BSND", Bnsd{1, 2, 3, 8});
  r.set_head_num(2);
  r.set_input_layout("BSND");
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreGradResponse response;
  grpc::Status status =
      server_.stub().FlashAttentionScoreGrad(&context, r, &response);
  EXPECT_EQ(ViolatedField(status), "dy.shape");
}

// Values that used to give a wrong answer with OK, refused through the wire
// with a BadRequest naming the field.
v1::FlashAttentionScoreGradRequest ValidGradRequest() {
  const v1::FlashAttentionScoreRequest f = ValidRequest();
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = f.query();
  *r.mutable_key() = f.key();
  *r.mutable_value() = f.value();
  *r.mutable_dy() = f.query();
  r.set_head_num(2);
  r.set_input_layout("BSND");
  return r;
}

grpc::Status Grad(TestServer& server,
                  const v1::FlashAttentionScoreGradRequest& request) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreGradResponse response;
  return server.stub().FlashAttentionScoreGrad(&context, request, &response);
}

TEST_F(ServerErrorsTest, ReservedInputsAndUnrepresentableScalarsAreNamed) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  *r.mutable_padding_mask() = Zeros("BSND", Bnsd{1, 2, 4, 8});
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "padding_mask");
  r = ValidRequest();
  r.set_scale_value(1e39);
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "scale_value");
  r = ValidRequest();
  r.set_keep_prob(1e-45);
  r.set_seed(1);
  EXPECT_EQ(ViolatedField(Forward(server_, r)), "keep_prob");

  v1::FlashAttentionScoreGradRequest g = ValidGradRequest();
  ASSERT_TRUE(Grad(server_, g).ok());
  *g.mutable_softmax_in() = Zeros("BSND", Bnsd{1, 2, 4, 8});
  EXPECT_EQ(ViolatedField(Grad(server_, g)), "softmax_in");
  // Residuals whose softmax_sum is 0 (all-zero statistics).
  g = ValidGradRequest();
  const Bnsd stats{1, 2, 4, 8};  // [B, N1, Sq, 8] as BNSD.
  *g.mutable_softmax_max() = Zeros("BNSD", stats);
  *g.mutable_softmax_sum() = Zeros("BNSD", stats);
  *g.mutable_attention_in() = ValidRequest().query();
  EXPECT_EQ(ViolatedField(Grad(server_, g)), "softmax_sum");
}

ServerOptions SmallMessageOptions() {
  ServerOptions options = TestServer::DefaultOptions();
  options.max_message_bytes = 64 * 1024;
  return options;
}

TEST(ServerLimitsTest, RequestLargerThanTheMessageLimitIsResourceExhausted) {
  TestServer server(SmallMessageOptions());
  ASSERT_TRUE(server.started());
  v1::FlashAttentionScoreRequest r = ValidRequest();
  const Bnsd big{1, 2, 1024, 8};  // 64 KiB per tensor, 192 KiB in all.
  *r.mutable_query() = Zeros("BSND", big);
  *r.mutable_key() = Zeros("BSND", big);
  *r.mutable_value() = Zeros("BSND", big);
  const grpc::Status status = Forward(server, r);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
}

TEST(ServerLimitsTest,
     ResponseLargerThanTheMessageLimitIsRefusedBeforeCompute) {
  TestServer server(SmallMessageOptions());
  ASSERT_TRUE(server.started());
  // fp16 query [1, 2048, 1, 8] is 32 KiB, but the fp32 softmax_max and
  // softmax_sum [1, 1, 2048, 8] add 128 KiB to the response.
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() =
      Zeros("BSND", Bnsd{1, 1, 2048, 8}, v1::DATA_TYPE_FLOAT16);
  *r.mutable_key() = Zeros("BSND", Bnsd{1, 1, 1, 8}, v1::DATA_TYPE_FLOAT16);
  *r.mutable_value() = Zeros("BSND", Bnsd{1, 1, 1, 8}, v1::DATA_TYPE_FLOAT16);
  r.set_head_num(1);
  r.set_input_layout("BSND");
  const grpc::Status status = Forward(server, r);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_message_bytes"));
}

// The scheduler's clock runs an hour ahead of the wall clock, so every
// deadline the client sets has already passed when a worker looks at it.
class AheadClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now() + absl::Hours(1); }
};

TEST(ServerDeadlineTest, DeadlinePassedBeforeComputeStartsIsDeadlineExceeded) {
  AheadClock clock;
  ServerOptions options = TestServer::DefaultOptions();
  options.clock = &clock;
  TestServer server(options);
  ASSERT_TRUE(server.started());

  grpc::Status status = Forward(server, ValidRequest(), /*with_deadline=*/true);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("in the queue"));

  // Without a deadline the same request runs.
  status = Forward(server, ValidRequest(), /*with_deadline=*/false);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// A failed allocation inside a worker (injected: the next host tensor the
// core allocates throws std::bad_alloc) ends that call with
// RESOURCE_EXHAUSTED; the server keeps serving and the next call succeeds.
TEST(ServerAllocationFailureTest, BadAllocInAWorkerIsResourceExhausted) {
  TestServer server;
  ASSERT_TRUE(server.started());
  for (int64_t n : {1, 2, 3}) {
    SCOPED_TRACE(n);
    core::FailNthHostAllocation(n);
    grpc::Status status = Forward(server, ValidRequest());
    core::FailNthHostAllocation(0);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("out of memory"));
    status = Forward(server, ValidRequest());
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  // The grad without residuals allocates the recomputed forward's outputs.
  core::FailNthHostAllocation(2);
  grpc::Status status = Grad(server, ValidGradRequest());
  core::FailNthHostAllocation(0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  status = Grad(server, ValidGradRequest());
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(server.server().engine().workspace_pool().in_use_bytes(), 0u);
}

}  // namespace
}  // namespace attnserve::server::testing
