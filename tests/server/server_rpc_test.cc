// The non-compute RPCs and the standard services on the same port, through a
// real gRPC server: GetWorkspaceSize, GetServerInfo, grpc.health.v1 and
// server reflection.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "attnserve/core/status_macros.h"
#include "gmock/gmock.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/status_mapping.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::google::protobuf::UnknownField;
using ::google::protobuf::UnknownFieldSet;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::MatchesRegex;
using ::testing::UnorderedElementsAre;

// B=1, S=4, N=2, D=8 fp32 BSND tensors (zeros: planning reads no values).
v1::FlashAttentionScoreRequest ForwardRequest() {
  v1::FlashAttentionScoreRequest r;
  const Bnsd dims{1, 2, 4, 8};
  const std::vector<double> zeros(static_cast<size_t>(dims.count()), 0.0);
  *r.mutable_query() = Pack("BSND", dims, zeros);
  *r.mutable_key() = Pack("BSND", dims, zeros);
  *r.mutable_value() = Pack("BSND", dims, zeros);
  r.set_head_num(2);
  r.set_input_layout("BSND");
  return r;
}

v1::FlashAttentionScoreGradRequest GradRequest() {
  const v1::FlashAttentionScoreRequest f = ForwardRequest();
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = f.query();
  *r.mutable_key() = f.key();
  *r.mutable_value() = f.value();
  *r.mutable_dy() = f.query();
  r.set_head_num(2);
  r.set_input_layout("BSND");
  return r;
}

struct SpecView {
  std::string name;
  v1::DataType dtype;
  std::vector<int64_t> shape;
  bool operator==(const SpecView& o) const {
    return name == o.name && dtype == o.dtype && shape == o.shape;
  }
  friend std::ostream& operator<<(std::ostream& os, const SpecView& s) {
    os << s.name << ":" << v1::DataType_Name(s.dtype) << "[";
    for (int64_t d : s.shape) os << d << ",";
    return os << "]";
  }
};

std::vector<SpecView> Specs(const v1::GetWorkspaceSizeResponse& response) {
  std::vector<SpecView> specs;
  for (const v1::TensorSpec& s : response.outputs()) {
    specs.push_back(
        {s.name(), s.dtype(), {s.shape().begin(), s.shape().end()}});
  }
  return specs;
}

class ServerRpcTest : public ::testing::Test {
 protected:
  grpc::Status WorkspaceSize(const v1::GetWorkspaceSizeRequest& request,
                             v1::GetWorkspaceSizeResponse* response) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    return server_.stub().GetWorkspaceSize(&context, request, response);
  }

  TestServer server_;
};

TEST_F(ServerRpcTest, WorkspaceSizeForForwardDescribesItsOutputs) {
  ASSERT_TRUE(server_.started());
  v1::GetWorkspaceSizeRequest request;
  *request.mutable_flash_attention_score() = ForwardRequest();
  v1::GetWorkspaceSizeResponse response;
  grpc::Status status = WorkspaceSize(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.flops(), 0);
  EXPECT_THAT(
      Specs(response),
      ElementsAre(
          SpecView{"attention_out", v1::DATA_TYPE_FLOAT32, {1, 4, 2, 8}},
          SpecView{"softmax_max", v1::DATA_TYPE_FLOAT32, {1, 2, 4, 8}},
          SpecView{"softmax_sum", v1::DATA_TYPE_FLOAT32, {1, 2, 4, 8}}));
}

TEST_F(ServerRpcTest, WorkspaceSizeForGradDescribesItsOutputs) {
  ASSERT_TRUE(server_.started());
  v1::GetWorkspaceSizeRequest request;
  *request.mutable_flash_attention_score_grad() = GradRequest();
  v1::GetWorkspaceSizeResponse response;
  grpc::Status status = WorkspaceSize(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.flops(), 0);
  EXPECT_THAT(Specs(response),
              ElementsAre(SpecView{"dq", v1::DATA_TYPE_FLOAT32, {1, 4, 2, 8}},
                          SpecView{"dk", v1::DATA_TYPE_FLOAT32, {1, 4, 2, 8}},
                          SpecView{"dv", v1::DATA_TYPE_FLOAT32, {1, 4, 2, 8}}));
}

TEST_F(ServerRpcTest, WorkspaceSizeGrowsWithTheProblem) {
  ASSERT_TRUE(server_.started());
  v1::GetWorkspaceSizeRequest small;
  *small.mutable_flash_attention_score() = ForwardRequest();
  v1::GetWorkspaceSizeRequest large = small;
  const Bnsd dims{1, 2, 512, 8};
  const std::vector<double> zeros(static_cast<size_t>(dims.count()), 0.0);
  v1::FlashAttentionScoreRequest* op = large.mutable_flash_attention_score();
  *op->mutable_query() = Pack("BSND", dims, zeros);
  *op->mutable_key() = Pack("BSND", dims, zeros);
  *op->mutable_value() = Pack("BSND", dims, zeros);
  v1::GetWorkspaceSizeResponse small_out, large_out;
  ASSERT_TRUE(WorkspaceSize(small, &small_out).ok());
  ASSERT_TRUE(WorkspaceSize(large, &large_out).ok());
  EXPECT_GT(large_out.flops(), small_out.flops());
  EXPECT_GE(large_out.workspace_bytes(), small_out.workspace_bytes());
}

TEST_F(ServerRpcTest, WorkspaceSizeNamesNestedFieldOnInvalidRequest) {
  ASSERT_TRUE(server_.started());
  v1::GetWorkspaceSizeRequest request;
  *request.mutable_flash_attention_score() = ForwardRequest();
  request.mutable_flash_attention_score()->set_head_num(3);
  v1::GetWorkspaceSizeResponse response;
  grpc::Status status = WorkspaceSize(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::optional<google::rpc::BadRequest> bad = BadRequestOf(status);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->field_violations(0).field(), "flash_attention_score.head_num");
}

TEST_F(ServerRpcTest, WorkspaceSizeWithoutAnOperatorIsInvalid) {
  ASSERT_TRUE(server_.started());
  v1::GetWorkspaceSizeResponse response;
  grpc::Status status = WorkspaceSize(v1::GetWorkspaceSizeRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::optional<google::rpc::BadRequest> bad = BadRequestOf(status);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->field_violations(0).field(), "op");
}

TEST(ServerInfoTest, ReportsVersionCapabilitiesAndLimits) {
  ServerOptions options = TestServer::DefaultOptions();
  options.workers = 3;
  options.queue_depth = 17;
  options.max_message_bytes = 12345678;
  options.memory_budget_bytes = 1 << 28;
  TestServer server(options);
  ASSERT_TRUE(server.started());

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::GetServerInfoResponse info;
  grpc::Status status =
      server.stub().GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(info.version(), MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
  EXPECT_THAT(
      info.operators(),
      UnorderedElementsAre("FlashAttentionScore", "FlashAttentionScoreGrad",
                           "NsaSelectedAttention", "NsaSelectedAttentionGrad"));
  EXPECT_THAT(
      info.dtypes(),
      UnorderedElementsAre(v1::DATA_TYPE_FLOAT32, v1::DATA_TYPE_FLOAT16,
                           v1::DATA_TYPE_BFLOAT16, v1::DATA_TYPE_FLOAT8_E4M3FN,
                           v1::DATA_TYPE_FLOAT8_E5M2));
  EXPECT_THAT(info.layouts(),
              UnorderedElementsAre("BSH", "SBH", "BSND", "BNSD", "TND"));
  EXPECT_EQ(info.worker_count(), 3);
  EXPECT_EQ(info.queue_depth(), 17);
  EXPECT_EQ(info.max_message_bytes(), 12345678u);
  EXPECT_EQ(info.memory_budget_bytes(), uint64_t{1} << 28);
  EXPECT_FALSE(info.compute_backends().empty());
}

// The bf16 tile products are a backend of their own, and
// --bf16_tile_products=false turns them off: plans (GetWorkspaceSize here)
// then size the fp32 products' workspace.
TEST(ServerInfoTest, ListsTheBf16TileProductsAndTheirOffSwitch) {
  v1::GetWorkspaceSizeRequest request;
  v1::FlashAttentionScoreRequest* op = request.mutable_flash_attention_score();
  const Bnsd dims{1, 2, 256, 64};
  const std::vector<double> zeros(static_cast<size_t>(dims.count()), 0.0);
  for (v1::Tensor* t :
       {op->mutable_query(), op->mutable_key(), op->mutable_value()}) {
    *t = Pack("BNSD", dims, zeros, v1::DATA_TYPE_BFLOAT16);
  }
  op->set_head_num(2);
  op->set_input_layout("BNSD");
  std::vector<uint64_t> workspace;
  bool host_has_bf16 = false;
  for (bool bf16 : {true, false}) {
    SCOPED_TRACE(bf16 ? "bf16 products on" : "bf16 products off");
    ServerOptions options = TestServer::DefaultOptions();
    options.bf16_tile_products = bf16;
    TestServer server(options);
    ASSERT_TRUE(server.started());
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(server.stub()
                    .GetServerInfo(&context, v1::GetServerInfoRequest(), &info)
                    .ok());
    const std::vector<std::string> backends(info.compute_backends().begin(),
                                            info.compute_backends().end());
    if (bf16) {
      EXPECT_THAT(backends,
                  ::testing::Contains(HasSubstr("onednn-bf16-matmul:")));
      host_has_bf16 = std::none_of(
          backends.begin(), backends.end(), [](const std::string& b) {
            return b.rfind("onednn-bf16-matmul:off", 0) == 0;
          });
    } else {
      EXPECT_THAT(backends, ::testing::Contains(
                                "onednn-bf16-matmul:off (disabled by option)"));
    }
    grpc::ClientContext size_context;
    SetTestDeadline(&size_context);
    v1::GetWorkspaceSizeResponse size;
    ASSERT_TRUE(
        server.stub().GetWorkspaceSize(&size_context, request, &size).ok());
    workspace.push_back(size.workspace_bytes());
  }
  // K and V kept in bf16 instead of widened: a smaller workspace, where the
  // host has the products.
  if (host_has_bf16) {
    EXPECT_LT(workspace[0], workspace[1]);
  } else {
    EXPECT_EQ(workspace[0], workspace[1]);
  }
}

// --- Standard services, called without generated stubs. ---

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

// grpc.health.v1.Health/Check for `service`. Returns the call status and
// sets `serving_status` (1 = SERVING, 2 = NOT_SERVING).
grpc::Status HealthCheck(TestServer& server, const std::string& service,
                         uint64_t* serving_status) {
  UnknownFieldSet request;  // HealthCheckRequest { string service = 1; }
  if (!service.empty()) request.AddLengthDelimited(1, service);
  std::string request_bytes;
  request.SerializeToString(&request_bytes);

  grpc::GenericStub stub(server.channel());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  const grpc::ByteBuffer send = ToByteBuffer(request_bytes);
  grpc::ByteBuffer receive;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &send, &receive, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  *serving_status = 0;  // UNKNOWN, also the proto3 default when absent.
  if (status.ok()) {
    UnknownFieldSet
        response;  // HealthCheckResponse { ServingStatus status = 1; }
    EXPECT_TRUE(response.ParseFromString(ToBytes(receive)));
    for (int i = 0; i < response.field_count(); ++i) {
      if (response.field(i).number() == 1 &&
          response.field(i).type() == UnknownField::TYPE_VARINT) {
        *serving_status = response.field(i).varint();
      }
    }
  }
  return status;
}

TEST(StandardServicesTest, HealthCheckReportsServing) {
  TestServer server;
  ASSERT_TRUE(server.started());
  uint64_t serving = 0;
  grpc::Status status = HealthCheck(server, "", &serving);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(serving, 1u);

  status = HealthCheck(server, "attnserve.v1.AttentionService", &serving);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(serving, 1u);

  status = HealthCheck(server, "no.such.Service", &serving);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// One request, one response on a bidi stream of raw bytes.
class OneShotBidiCall
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  OneShotBidiCall(grpc::GenericStub* stub, const std::string& method,
                  const std::string& request_bytes)
      : request_(ToByteBuffer(request_bytes)) {
    SetTestDeadline(&context_);
    stub->PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(),
                                   this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override { read_ok_ = ok; }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.Notify();
  }
  // Waits for the call to end; returns its status.
  grpc::Status Await() {
    done_.WaitForNotification();
    return status_;
  }
  bool read_ok() const { return read_ok_; }
  std::string response_bytes() const { return ToBytes(response_); }

 private:
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  bool read_ok_ = false;
  grpc::Status status_;
  absl::Notification done_;
};

TEST(StandardServicesTest, ReflectionListsTheServices) {
  TestServer server;
  ASSERT_TRUE(server.started());
  // ServerReflectionRequest { string list_services = 7; }
  UnknownFieldSet request;
  request.AddLengthDelimited(7, "");
  std::string request_bytes;
  request.SerializeToString(&request_bytes);

  grpc::GenericStub stub(server.channel());
  OneShotBidiCall call(
      &stub, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      request_bytes);
  grpc::Status status = call.Await();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(call.read_ok());

  // ServerReflectionResponse { ListServiceResponse list_services_response = 6;
  // } ListServiceResponse { repeated ServiceResponse service = 1; }
  // ServiceResponse { string name = 1; }
  std::vector<std::string> names;
  UnknownFieldSet response;
  ASSERT_TRUE(response.ParseFromString(call.response_bytes()));
  for (int i = 0; i < response.field_count(); ++i) {
    if (response.field(i).number() != 6) continue;
    UnknownFieldSet list;
    ASSERT_TRUE(list.ParseFromString(response.field(i).length_delimited()));
    for (int j = 0; j < list.field_count(); ++j) {
      UnknownFieldSet service;
      ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
      ASSERT_GE(service.field_count(), 1);
      names.push_back(service.field(0).length_delimited());
    }
  }
  EXPECT_THAT(names, IsSupersetOf({"attnserve.v1.AttentionService",
                                   "grpc.health.v1.Health"}));
}

}  // namespace
}  // namespace attnserve::server::testing
