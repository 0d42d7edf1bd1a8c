// The compute RPCs on the wire as bytes (rpc_pipeline.h): requests decoded
// with their tensors' data copied once into pooled buffers, responses sent
// from the buffers the kernel wrote. The outputs must be bit for bit those
// of the message path (the same engine run on the request as protobuf parses
// it, outputs copied into the message), for every dtype; bytes that are no
// request must be INVALID_ARGUMENT naming the message type.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "attnserve/client/client.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/prepared_call.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/operator_rpcs.h"
#include "server/proto_convert.h"
#include "server/status_mapping.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kForwardMethod[] =
    "/attnserve.v1.AttentionService/FlashAttentionScore";

// Sends `bytes` as the request of `method` and returns the status.
grpc::Status CallWithBytes(TestServer& server, const std::string& method,
                           const std::string& bytes) {
  grpc::GenericStub stub(server.channel());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  grpc::Slice slice(bytes.data(), bytes.size());
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  return status;
}

v1::FlashAttentionScoreRequest ForwardRequest(const Bnsd& dims,
                                              v1::DataType dtype) {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", dims, RandomValues(dims.count(), 1), dtype);
  *r.mutable_key() = Pack("BNSD", dims, RandomValues(dims.count(), 2), dtype);
  *r.mutable_value() = Pack("BNSD", dims, RandomValues(dims.count(), 3), dtype);
  r.set_head_num(dims.n);
  r.set_input_layout("BNSD");
  r.set_scale_value(0.125);
  return r;
}

// The grad request for `forward` and its answer `out`: the same inputs, a
// random dy, and the forward's outputs.
v1::FlashAttentionScoreGradRequest GradRequest(
    const Bnsd& dims, v1::DataType dtype,
    const v1::FlashAttentionScoreRequest& forward,
    const v1::FlashAttentionScoreResponse& out) {
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = forward.query();
  *r.mutable_key() = forward.key();
  *r.mutable_value() = forward.value();
  *r.mutable_dy() = Pack("BNSD", dims, RandomValues(dims.count(), 4), dtype);
  *r.mutable_softmax_max() = out.softmax_max();
  *r.mutable_softmax_sum() = out.softmax_sum();
  *r.mutable_attention_in() = out.attention_out();
  r.set_head_num(dims.n);
  r.set_input_layout("BNSD");
  r.set_scale_value(0.125);
  return r;
}

// What the message path answers: the request's own `data` fields as the
// kernel's inputs, the outputs copied into the response message.
template <typename Rpc>
typename Rpc::Response ByMessage(Server& server,
                                 const typename Rpc::Request& request) {
  typename Rpc::Response response;
  absl::StatusOr<typename Rpc::Args> args = Rpc::ToArgs(request);
  EXPECT_TRUE(args.ok()) << args.status();
  if (!args.ok()) return response;
  const ServerOptions options = TestServer::DefaultOptions();
  absl::StatusOr<typename Rpc::Call> call = Rpc::Call::Prepare(
      *std::move(args),
      core::ThreadPolicy(options.threads_per_request, options.flops_per_thread,
                         options.bytes_per_thread));
  EXPECT_TRUE(call.ok()) << call.status();
  if (!call.ok()) return response;
  core::CancelToken token(absl::InfiniteFuture());
  absl::StatusOr<typename Rpc::Result> result =
      server.engine().Run(*call, token);
  EXPECT_TRUE(result.ok()) << result.status();
  if (result.ok()) Rpc::Respond(*std::move(result), &response);
  return response;
}

// Everything but the timings.
void ExpectSameOutputs(const google::protobuf::Message& got,
                       const google::protobuf::Message& want) {
  auto strip = [](const google::protobuf::Message& m) {
    std::unique_ptr<google::protobuf::Message> copy(m.New());
    copy->CopyFrom(m);
    const google::protobuf::FieldDescriptor* stats =
        copy->GetDescriptor()->FindFieldByName("stats");
    copy->GetReflection()->ClearField(copy.get(), stats);
    std::string bytes;
    copy->SerializeToString(&bytes);
    return bytes;
  };
  const std::string a = strip(got);
  const std::string b = strip(want);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "outputs differ";
}

struct WireCase {
  const char* name;
  v1::DataType dtype;
  Bnsd dims;
};

class ServerWireTest : public ::testing::TestWithParam<WireCase> {
 protected:
  TestServer server_;
};

TEST_P(ServerWireTest, ForwardOutputsEqualTheMessagePathBitForBit) {
  ASSERT_TRUE(server_.started());
  const v1::FlashAttentionScoreRequest request =
      ForwardRequest(GetParam().dims, GetParam().dtype);
  // Twice: the second call's buffers come from the pool, used before.
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::FlashAttentionScoreResponse response;
    grpc::Status status =
        server_.stub().FlashAttentionScore(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ExpectSameOutputs(
        response, ByMessage<FlashAttentionScoreRpc>(server_.server(), request));
  }
}

TEST_P(ServerWireTest, GradOutputsEqualTheMessagePathBitForBit) {
  ASSERT_TRUE(server_.started());
  const Bnsd dims = GetParam().dims;
  const v1::FlashAttentionScoreRequest forward =
      ForwardRequest(dims, GetParam().dtype);
  const v1::FlashAttentionScoreResponse out =
      ByMessage<FlashAttentionScoreRpc>(server_.server(), forward);
  const v1::FlashAttentionScoreGradRequest request =
      GradRequest(dims, GetParam().dtype, forward, out);
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreGradResponse response;
  grpc::Status status =
      server_.stub().FlashAttentionScoreGrad(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ExpectSameOutputs(response, ByMessage<FlashAttentionScoreGradRpc>(
                                  server_.server(), request));
}

// The client's compute calls (Client::Compute): the request's tensors lent
// to gRPC from the request itself, the response decoded into the memory the
// response object already holds. The outputs must be bit for bit those the
// generated stub receives (protobuf on both ends), on the first call into a
// fresh response and on the next into the same one, whose tensors then stay
// where they were.
TEST_P(ServerWireTest, ClientComputeEqualsTheGeneratedStubBitForBit) {
  ASSERT_TRUE(server_.started());
  const Bnsd dims = GetParam().dims;
  const v1::FlashAttentionScoreRequest forward =
      ForwardRequest(dims, GetParam().dtype);
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse by_stub;
  grpc::Status status =
      server_.stub().FlashAttentionScore(&context, forward, &by_stub);
  ASSERT_TRUE(status.ok()) << status.error_message();

  const Client client(server_.channel());
  v1::FlashAttentionScoreResponse reused;
  ASSERT_TRUE(client.Compute(forward, &reused).ok());
  ExpectSameOutputs(reused, by_stub);
  const char* const first = reused.attention_out().data().data();
  ASSERT_TRUE(client.Compute(forward, &reused).ok());
  ExpectSameOutputs(reused, by_stub);
  EXPECT_EQ(reused.attention_out().data().data(), first)
      << "the second call did not receive into the first call's memory";
  absl::StatusOr<v1::FlashAttentionScoreResponse> returned =
      client.FlashAttentionScore(forward);
  ASSERT_TRUE(returned.ok()) << returned.status();
  ExpectSameOutputs(*returned, by_stub);

  const v1::FlashAttentionScoreGradRequest grad =
      GradRequest(dims, GetParam().dtype, forward, by_stub);
  grpc::ClientContext grad_context;
  SetTestDeadline(&grad_context);
  v1::FlashAttentionScoreGradResponse grad_by_stub;
  status = server_.stub().FlashAttentionScoreGrad(&grad_context, grad,
                                                  &grad_by_stub);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::FlashAttentionScoreGradResponse grad_reused;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client.Compute(grad, &grad_reused).ok());
    ExpectSameOutputs(grad_reused, grad_by_stub);
  }
}

// Small outputs travel inside the encoded header bytes; large ones (from 64
// KiB) as slices of their own that point at the output buffers.
INSTANTIATE_TEST_SUITE_P(
    Dtypes, ServerWireTest,
    ::testing::Values(
        WireCase{"Fp32Small", v1::DATA_TYPE_FLOAT32, Bnsd{1, 2, 16, 16}},
        WireCase{"Fp32Large", v1::DATA_TYPE_FLOAT32, Bnsd{1, 2, 256, 64}},
        WireCase{"Fp16Large", v1::DATA_TYPE_FLOAT16, Bnsd{1, 2, 256, 64}},
        WireCase{"Bf16Large", v1::DATA_TYPE_BFLOAT16, Bnsd{2, 2, 128, 128}}),
    [](const ::testing::TestParamInfo<WireCase>& info) {
      return std::string(info.param.name);
    });

class ServerUnparseableTest : public ::testing::Test {
 protected:
  TestServer server_;
};

TEST_F(ServerUnparseableTest, GarbageIsInvalidArgumentNamingTheMessageType) {
  ASSERT_TRUE(server_.started());
  // Field 1, wire type 7: not a wire type.
  grpc::Status status =
      CallWithBytes(server_, kForwardMethod, std::string("\x0f\xff\xff", 3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("not a valid attnserve.v1.FlashAttentionScoreRequest"));
}

// The small RPCs and the resident tensors' streams, whose first (here only)
// message is garbage.
TEST_F(ServerUnparseableTest, OtherRpcsRefuseGarbageNamingTheMessageType) {
  ASSERT_TRUE(server_.started());
  for (const char* name :
       {"GetWorkspaceSize", "GetServerInfo", "PutTensor", "GetTensor"}) {
    SCOPED_TRACE(name);
    grpc::Status status = CallWithBytes(
        server_, std::string("/attnserve.v1.AttentionService/") + name,
        std::string("\x0f\xff\xff", 3));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(
        status.error_message(),
        HasSubstr(std::string("not a valid attnserve.v1.") + name + "Request"));
  }
  // And still answer valid ones.
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::GetServerInfoResponse info;
  EXPECT_TRUE(server_.stub().GetServerInfo(&context, {}, &info).ok());
  EXPECT_FALSE(info.version().empty());
}

TEST_F(ServerUnparseableTest, TruncatedTensorNamesItsField) {
  ASSERT_TRUE(server_.started());
  std::string bytes = ForwardRequest(Bnsd{1, 2, 16, 16}, v1::DATA_TYPE_FLOAT32)
                          .SerializeAsString();
  bytes.resize(100);  // Inside the query's data.
  grpc::Status status = CallWithBytes(server_, kForwardMethod, bytes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("not a valid attnserve.v1.FlashAttentionScoreRequest"));
  std::optional<google::rpc::BadRequest> bad = BadRequestOf(status);
  ASSERT_TRUE(bad.has_value());
  ASSERT_GT(bad->field_violations_size(), 0);
  EXPECT_EQ(bad->field_violations(0).field(), "query");
}

TEST_F(ServerUnparseableTest, ServerStillAnswersAfterHostileBytes) {
  ASSERT_TRUE(server_.started());
  for (const std::string& bytes :
       {std::string("\x0a\xff\xff\xff\xff\x0f", 6), std::string(1000, '\xff'),
        std::string("\x0a\x05\x22\x03\x0a\x01", 6)}) {
    grpc::Status status = CallWithBytes(server_, kForwardMethod, bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << status.error_message();
  }
  const std::string valid =
      ForwardRequest(Bnsd{1, 2, 16, 16}, v1::DATA_TYPE_FLOAT32)
          .SerializeAsString();
  EXPECT_TRUE(CallWithBytes(server_, kForwardMethod, valid).ok());
}

}  // namespace
}  // namespace attnserve::server::testing
