// FlashAttentionScore and FlashAttentionScoreGrad through a real gRPC server,
// checked against a plain double-precision computation.
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/reference.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// The shared small problem: GQA with 2 query heads on 1 kv head, Sq != Skv.
RefProblem SmallProblem() {
  RefProblem p;
  p.b = 2, p.n1 = 2, p.n2 = 1, p.s1 = 3, p.s2 = 5, p.d = 4, p.dv = 4;
  p.scale = 0.5;
  return p;
}

// Fills q/k/v (and dy) with random values, packs them into a request and
// replaces the problem's values with what the wire actually carries.
v1::FlashAttentionScoreRequest ForwardRequest(
    RefProblem* p, const std::string& layout,
    v1::DataType dtype = v1::DATA_TYPE_FLOAT32) {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() =
      Pack(layout, p->q_dims(), RandomValues(p->q_dims().count(), 1), dtype);
  *r.mutable_key() =
      Pack(layout, p->k_dims(), RandomValues(p->k_dims().count(), 2), dtype);
  *r.mutable_value() =
      Pack(layout, p->v_dims(), RandomValues(p->v_dims().count(), 3), dtype);
  p->q = Unpack(layout, p->q_dims(), r.query());
  p->k = Unpack(layout, p->k_dims(), r.key());
  p->v = Unpack(layout, p->v_dims(), r.value());
  r.set_scale_value(p->scale);
  r.set_head_num(p->n1);
  r.set_input_layout(layout);
  return r;
}

void ExpectAllNear(const std::vector<double>& got,
                   const std::vector<double>& want, double tolerance,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << "[" << i << "]";
    if (std::abs(got[i] - want[i]) > tolerance * (1.0 + std::abs(want[i])) &&
        reported++ < 5) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", want "
                    << want[i];
    }
  }
}

// softmax_max / softmax_sum: FLOAT32 [B, N1, Sq, 8], all lanes equal.
void ExpectSoftmaxStat(const v1::Tensor& tensor, const RefProblem& p,
                       const std::vector<double>& want, double tolerance,
                       const std::string& what) {
  EXPECT_EQ(tensor.dtype(), v1::DATA_TYPE_FLOAT32) << what;
  EXPECT_THAT(tensor.shape(), ElementsAre(p.b, p.n1, p.s1, 8)) << what;
  const std::vector<float> values = Fp32Values(tensor);
  ASSERT_EQ(values.size(), want.size() * 8) << what;
  std::vector<double> lanes;
  for (double w : want) lanes.insert(lanes.end(), 8, w);
  ExpectAllNear(std::vector<double>(values.begin(), values.end()), lanes,
                tolerance, what);
}

class LayoutRoundTripTest : public ::testing::TestWithParam<std::string> {
 protected:
  TestServer server_;
};

TEST_P(LayoutRoundTripTest, ForwardMatchesDoublePrecisionReference) {
  ASSERT_TRUE(server_.started());
  const std::string layout = GetParam();
  RefProblem p = SmallProblem();
  v1::FlashAttentionScoreRequest request = ForwardRequest(&p, layout);
  const RefResult want = ReferenceAttention(p);

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  grpc::Status status =
      server_.stub().FlashAttentionScore(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();

  EXPECT_EQ(response.attention_out().dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(response.attention_out().shape(),
              ElementsAreArray(WireShape(layout, p.out_dims())));
  ExpectAllNear(Unpack(layout, p.out_dims(), response.attention_out()),
                want.out, 1e-5, "attention_out");
  ExpectSoftmaxStat(response.softmax_max(), p, want.row_max, 1e-5,
                    "softmax_max");
  ExpectSoftmaxStat(response.softmax_sum(), p, want.row_sum, 1e-5,
                    "softmax_sum");
  EXPECT_FALSE(response.has_softmax_out());

  const v1::ExecutionStats& stats = response.stats();
  EXPECT_GT(stats.flops(), 0);
  EXPECT_GE(stats.queue_seconds(), 0);
  EXPECT_GT(stats.compute_seconds(), 0);
}

TEST_P(LayoutRoundTripTest, BackwardMatchesReferenceWithForwardResiduals) {
  ASSERT_TRUE(server_.started());
  const std::string layout = GetParam();
  RefProblem p = SmallProblem();
  v1::FlashAttentionScoreRequest forward = ForwardRequest(&p, layout);
  p.dy = RandomValues(p.out_dims().count(), 4);
  const RefResult want = ReferenceAttention(p);

  v1::FlashAttentionScoreResponse forward_out;
  {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    grpc::Status status =
        server_.stub().FlashAttentionScore(&context, forward, &forward_out);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  v1::FlashAttentionScoreGradRequest request;
  *request.mutable_query() = forward.query();
  *request.mutable_key() = forward.key();
  *request.mutable_value() = forward.value();
  *request.mutable_dy() = Pack(layout, p.out_dims(), p.dy);
  *request.mutable_softmax_max() = forward_out.softmax_max();
  *request.mutable_softmax_sum() = forward_out.softmax_sum();
  *request.mutable_attention_in() = forward_out.attention_out();
  request.set_scale_value(p.scale);
  request.set_head_num(p.n1);
  request.set_input_layout(layout);

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreGradResponse response;
  grpc::Status status =
      server_.stub().FlashAttentionScoreGrad(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();

  for (const v1::Tensor* t : {&response.dq(), &response.dk(), &response.dv()}) {
    EXPECT_EQ(t->dtype(), v1::DATA_TYPE_FLOAT32);
  }
  EXPECT_THAT(response.dq().shape(),
              ElementsAreArray(WireShape(layout, p.q_dims())));
  EXPECT_THAT(response.dk().shape(),
              ElementsAreArray(WireShape(layout, p.k_dims())));
  EXPECT_THAT(response.dv().shape(),
              ElementsAreArray(WireShape(layout, p.v_dims())));
  ExpectAllNear(Unpack(layout, p.q_dims(), response.dq()), want.dq, 1e-4, "dq");
  ExpectAllNear(Unpack(layout, p.k_dims(), response.dk()), want.dk, 1e-4, "dk");
  ExpectAllNear(Unpack(layout, p.v_dims(), response.dv()), want.dv, 1e-4, "dv");
  EXPECT_FALSE(response.has_dpse());
  EXPECT_GT(response.stats().flops(), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, LayoutRoundTripTest,
                         ::testing::Values("BSH", "SBH", "BSND", "BNSD"),
                         [](const auto& info) { return info.param; });

TEST(ServerComputeTest, BackwardRecomputesResidualsWhenNotSent) {
  TestServer server;
  ASSERT_TRUE(server.started());
  RefProblem p = SmallProblem();
  v1::FlashAttentionScoreRequest forward = ForwardRequest(&p, "BNSD");
  p.dy = RandomValues(p.out_dims().count(), 5);
  const RefResult want = ReferenceAttention(p);

  v1::FlashAttentionScoreGradRequest request;
  *request.mutable_query() = forward.query();
  *request.mutable_key() = forward.key();
  *request.mutable_value() = forward.value();
  *request.mutable_dy() = Pack("BNSD", p.out_dims(), p.dy);
  request.set_scale_value(p.scale);
  request.set_head_num(p.n1);
  request.set_input_layout("BNSD");

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreGradResponse response;
  grpc::Status status =
      server.stub().FlashAttentionScoreGrad(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ExpectAllNear(Unpack("BNSD", p.q_dims(), response.dq()), want.dq, 1e-4, "dq");
  ExpectAllNear(Unpack("BNSD", p.k_dims(), response.dk()), want.dk, 1e-4, "dk");
  ExpectAllNear(Unpack("BNSD", p.v_dims(), response.dv()), want.dv, 1e-4, "dv");
}

TEST(ServerComputeTest, Bf16ForwardKeepsTheInputDtype) {
  TestServer server;
  ASSERT_TRUE(server.started());
  RefProblem p = SmallProblem();
  v1::FlashAttentionScoreRequest request =
      ForwardRequest(&p, "BSND", v1::DATA_TYPE_BFLOAT16);
  const RefResult want = ReferenceAttention(p);

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  grpc::Status status =
      server.stub().FlashAttentionScore(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.attention_out().dtype(), v1::DATA_TYPE_BFLOAT16);
  EXPECT_EQ(response.softmax_max().dtype(), v1::DATA_TYPE_FLOAT32);
  // bf16 keeps 8 significant bits.
  ExpectAllNear(Unpack("BSND", p.out_dims(), response.attention_out()),
                want.out, 2e-2, "attention_out");
}

TEST(ServerComputeTest, LargerProblemSpanningSeveralTilesMatchesReference) {
  TestServer server;
  ASSERT_TRUE(server.started());
  RefProblem p;
  p.b = 1, p.n1 = 4, p.n2 = 2, p.s1 = 97, p.s2 = 130, p.d = 64, p.dv = 64;
  p.scale = 0.125;
  v1::FlashAttentionScoreRequest request = ForwardRequest(&p, "BNSD");
  const RefResult want = ReferenceAttention(p);

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  grpc::Status status =
      server.stub().FlashAttentionScore(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ExpectAllNear(Unpack("BNSD", p.out_dims(), response.attention_out()),
                want.out, 1e-4, "attention_out");
  ExpectSoftmaxStat(response.softmax_sum(), p, want.row_sum, 1e-4,
                    "softmax_sum");
}

TEST(ServerComputeTest, ConcurrentRequestsAllSucceed) {
  TestServer server;
  ASSERT_TRUE(server.started());
  RefProblem p = SmallProblem();
  const v1::FlashAttentionScoreRequest request = ForwardRequest(&p, "BSH");
  const RefResult want = ReferenceAttention(p);

  constexpr int kClients = 4;
  constexpr int kCallsEach = 3;
  std::vector<std::thread> clients;
  std::vector<int> ok(kClients, 0);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kCallsEach; ++i) {
        grpc::ClientContext context;
        SetTestDeadline(&context);
        v1::FlashAttentionScoreResponse response;
        if (server.stub()
                .FlashAttentionScore(&context, request, &response)
                .ok() &&
            response.attention_out().data().size() ==
                want.out.size() * sizeof(float)) {
          ++ok[static_cast<size_t>(c)];
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_THAT(ok, ::testing::Each(kCallsEach));
}

}  // namespace
}  // namespace attnserve::server::testing
