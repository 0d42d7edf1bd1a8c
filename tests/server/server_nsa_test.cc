// NsaSelectedAttention and NsaSelectedAttentionGrad through a real gRPC
// server: round trips against the float64 gathering reference,
// GetWorkspaceSize for both, and validation errors carrying a
// google.rpc.BadRequest that names the field.
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/status_mapping.h"
#include "tests/server/test_server.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/nsa_requests.h"

namespace attnserve::server::testing {
namespace {

using ::attnserve::test::ExpectNsaBackwardMatches;
using ::attnserve::test::ExpectNsaForwardMatches;
using ::attnserve::test::FromWire;
using ::attnserve::test::NsaCase;
using ::attnserve::test::NsaCaseConfig;
using ::attnserve::test::NsaForwardRequest;
using ::attnserve::test::NsaGradRequest;
using ::attnserve::test::NsaIndexPattern;
using ::attnserve::test::TolerancesFor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The field of the first BadRequest violation, or what was found instead.
std::string ViolatedField(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    return "<code " + std::to_string(status.error_code()) + ": " +
           status.error_message() + ">";
  }
  std::optional<google::rpc::BadRequest> bad = BadRequestOf(status);
  if (!bad.has_value() || bad->field_violations_size() == 0) {
    return "<no BadRequest details>";
  }
  return bad->field_violations(0).field();
}

class ServerNsaTest : public ::testing::Test {
 protected:
  grpc::Status Forward(const v1::NsaSelectedAttentionRequest& request,
                       v1::NsaSelectedAttentionResponse* response) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    return server_.stub().NsaSelectedAttention(&context, request, response);
  }
  grpc::Status Grad(const v1::NsaSelectedAttentionGradRequest& request,
                    v1::NsaSelectedAttentionGradResponse* response) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    return server_.stub().NsaSelectedAttentionGrad(&context, request, response);
  }
  grpc::Status WorkspaceSize(const v1::GetWorkspaceSizeRequest& request,
                             v1::GetWorkspaceSizeResponse* response) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    return server_.stub().GetWorkspaceSize(&context, request, response);
  }

  TestServer server_;
};

// GQA G=2 over three batches (one without queries), causal mode 2, bf16.
NsaCaseConfig SmallConfig() {
  NsaCaseConfig config;
  config.dtype = core::DType::kBFloat16;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  config.seed = 31;
  return config;
}

TEST_F(ServerNsaTest, ForwardAndGradRoundTripMatchTheReference) {
  ASSERT_TRUE(server_.started());
  NsaCase c(SmallConfig());
  v1::NsaSelectedAttentionResponse forward;
  grpc::Status status = Forward(NsaForwardRequest(c), &forward);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(forward.attention_out().dtype(), v1::DATA_TYPE_BFLOAT16);
  EXPECT_THAT(forward.attention_out().shape(), ElementsAre(200, 4, 128));
  EXPECT_THAT(forward.softmax_max().shape(), ElementsAre(200, 4, 8));
  EXPECT_GT(forward.stats().flops(), 0);
  EXPECT_GT(forward.stats().compute_seconds(), 0);
  EXPECT_GT(forward.stats().workspace_bytes(), 0u);
  core::ForwardResult got;
  got.attention_out = FromWire(forward.attention_out());
  got.softmax_max = FromWire(forward.softmax_max());
  got.softmax_sum = FromWire(forward.softmax_sum());
  ExpectNsaForwardMatches(c, got, TolerancesFor(core::DType::kBFloat16));

  v1::NsaSelectedAttentionGradResponse grad;
  status = Grad(NsaGradRequest(c, forward), &grad);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(grad.dk().shape(), ElementsAre(384, 2, 128));
  EXPECT_GT(grad.stats().flops(), forward.stats().flops());
  core::BackwardResult grads;
  grads.dq = FromWire(grad.dq());
  grads.dk = FromWire(grad.dk());
  grads.dv = FromWire(grad.dv());
  ExpectNsaBackwardMatches(c, grads, TolerancesFor(core::DType::kBFloat16));
}

TEST_F(ServerNsaTest, WorkspaceSizeDescribesBothOperators) {
  ASSERT_TRUE(server_.started());
  NsaCase c(SmallConfig());
  const v1::NsaSelectedAttentionRequest forward_request = NsaForwardRequest(c);
  v1::GetWorkspaceSizeRequest request;
  *request.mutable_nsa_selected_attention() = forward_request;
  v1::GetWorkspaceSizeResponse response;
  grpc::Status status = WorkspaceSize(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.workspace_bytes(), 0u);
  ASSERT_EQ(response.outputs_size(), 3);
  EXPECT_EQ(response.outputs(0).name(), "attention_out");
  EXPECT_THAT(response.outputs(0).shape(), ElementsAre(200, 4, 128));
  EXPECT_EQ(response.outputs(1).dtype(), v1::DATA_TYPE_FLOAT32);

  v1::NsaSelectedAttentionResponse forward;
  ASSERT_TRUE(Forward(forward_request, &forward).ok());
  EXPECT_EQ(forward.stats().flops(), response.flops());
  EXPECT_EQ(forward.stats().workspace_bytes(), response.workspace_bytes());

  v1::GetWorkspaceSizeRequest grad_request;
  *grad_request.mutable_nsa_selected_attention_grad() =
      NsaGradRequest(c, forward);
  status = WorkspaceSize(grad_request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.outputs_size(), 3);
  EXPECT_EQ(response.outputs(2).name(), "dv");
  EXPECT_THAT(response.outputs(1).shape(), ElementsAre(384, 2, 128));
  EXPECT_EQ(response.outputs(1).dtype(), v1::DATA_TYPE_BFLOAT16);
}

TEST_F(ServerNsaTest, IndexOutsideItsBatchIsInvalidArgumentNamingIt) {
  ASSERT_TRUE(server_.started());
  NsaCase c(SmallConfig());
  v1::NsaSelectedAttentionRequest request = NsaForwardRequest(c);
  // Token 10 is in batch 0 (128 keys = blocks 0..7); name block 8.
  std::string* data = request.mutable_topk_indices()->mutable_data();
  const int32_t bad = 8;
  data->replace((10 * 2 + 1) * 4 * 4 + 3 * 4, 4,
                reinterpret_cast<const char*>(&bad), 4);
  v1::NsaSelectedAttentionResponse response;
  grpc::Status status = Forward(request, &response);
  EXPECT_EQ(ViolatedField(status), "topk_indices[10,1,3]");
  EXPECT_THAT(status.error_message(), HasSubstr("[0, 8)"));

  v1::GetWorkspaceSizeRequest sizing;
  *sizing.mutable_nsa_selected_attention() = request;
  v1::GetWorkspaceSizeResponse sized;
  EXPECT_EQ(ViolatedField(WorkspaceSize(sizing, &sized)),
            "nsa_selected_attention.topk_indices[10,1,3]");
}

TEST_F(ServerNsaTest, MissingTensorsAreNamed) {
  ASSERT_TRUE(server_.started());
  NsaCase c(SmallConfig());
  v1::NsaSelectedAttentionRequest request = NsaForwardRequest(c);
  request.clear_topk_indices();
  v1::NsaSelectedAttentionResponse response;
  EXPECT_EQ(ViolatedField(Forward(request, &response)), "topk_indices");

  v1::NsaSelectedAttentionResponse forward;
  ASSERT_TRUE(Forward(NsaForwardRequest(c), &forward).ok());
  v1::NsaSelectedAttentionGradRequest grad = NsaGradRequest(c, forward);
  grad.clear_softmax_sum();
  v1::NsaSelectedAttentionGradResponse grad_response;
  EXPECT_EQ(ViolatedField(Grad(grad, &grad_response)), "softmax_sum");
  grad = NsaGradRequest(c, forward);
  grad.mutable_attention_out_grad()->mutable_shape()->Set(2, 64);
  EXPECT_EQ(ViolatedField(Grad(grad, &grad_response)),
            "attention_out_grad.data");
}

TEST_F(ServerNsaTest, RulesOfThePlanComeBackAsBadRequest) {
  ASSERT_TRUE(server_.started());
  NsaCase c(SmallConfig());
  v1::NsaSelectedAttentionRequest request = NsaForwardRequest(c);
  request.set_selected_block_size(24);
  v1::NsaSelectedAttentionResponse response;
  EXPECT_EQ(ViolatedField(Forward(request, &response)), "selected_block_size");
  request = NsaForwardRequest(c);
  request.set_input_layout("BSND");
  EXPECT_EQ(ViolatedField(Forward(request, &response)), "input_layout");
  request = NsaForwardRequest(c);
  request.mutable_actual_seq_kvlen()->Set(1, 150);
  EXPECT_EQ(ViolatedField(Forward(request, &response)), "actual_seq_kvlen[1]");
}

}  // namespace
}  // namespace attnserve::server::testing
