// The FlashAttention features beyond plain attention (TND varlen, sparse
// modes, pse with dpse, seeded dropout, FLOAT8 grads) through a real gRPC
// server: every option reaches the core unchanged, so the server's answer is
// bit-identical to the core's own for the same request, and the grad
// regenerates the forward's dropout mask from the seed.
#include <cstring>
#include <string>
#include <vector>

#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "attnserve/wire/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/proto_convert.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

using ::testing::ElementsAre;

// T1 = 2 + 0 + 7 = 9 query tokens, T2 = 3 + 4 + 7 = 14 key tokens, N1 = 4,
// N2 = 2, D = 8, Dv = 6 (TND allows qD == kD >= vD).
constexpr int64_t kT1 = 9, kT2 = 14, kN1 = 4, kN2 = 2, kD = 8, kDv = 6;

v1::Tensor Random3d(int64_t t, int64_t n, int64_t d, uint32_t seed) {
  const std::vector<double> values = RandomValues(t * n * d, seed);
  return Fp32Tensor({t, n, d},
                    std::vector<float>(values.begin(), values.end()));
}

v1::FlashAttentionScoreRequest VarlenForward() {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Random3d(kT1, kN1, kD, 1);
  *r.mutable_key() = Random3d(kT2, kN2, kD, 2);
  *r.mutable_value() = Random3d(kT2, kN2, kDv, 3);
  for (int64_t v : {2, 2, 9}) r.add_actual_seq_qlen(v);
  for (int64_t v : {3, 7, 14}) r.add_actual_seq_kvlen(v);
  r.set_head_num(kN1);
  r.set_input_layout("TND");
  r.set_scale_value(0.35);
  r.set_sparse_mode(3);  // Bottom-right causal, Sq_b <= Skv_b everywhere.
  r.set_keep_prob(0.8);
  r.set_seed(1234);
  r.set_offset(7);
  return r;
}

v1::FlashAttentionScoreGradRequest GradOf(
    const v1::FlashAttentionScoreRequest& f) {
  v1::FlashAttentionScoreGradRequest g;
  *g.mutable_query() = f.query();
  *g.mutable_key() = f.key();
  *g.mutable_value() = f.value();
  *g.mutable_dy() = Random3d(kT1, kN1, kDv, 4);
  *g.mutable_actual_seq_qlen() = f.actual_seq_qlen();
  *g.mutable_actual_seq_kvlen() = f.actual_seq_kvlen();
  g.set_head_num(f.head_num());
  g.set_input_layout(f.input_layout());
  g.set_scale_value(f.scale_value());
  g.set_sparse_mode(f.sparse_mode());
  if (f.has_keep_prob()) g.set_keep_prob(f.keep_prob());
  if (f.has_seed()) g.set_seed(f.seed());
  if (f.has_offset()) g.set_offset(f.offset());
  if (f.has_pse()) *g.mutable_pse() = f.pse();
  if (f.has_pse_type()) g.set_pse_type(f.pse_type());
  return g;
}

// The core's own answer to `request`, run in-process.
core::ForwardResult CoreForward(const v1::FlashAttentionScoreRequest& r) {
  absl::StatusOr<core::ForwardArgs> args = ToForwardArgs(r);
  EXPECT_TRUE(args.ok()) << args.status();
  absl::StatusOr<core::ForwardCall> call =
      core::ForwardCall::Prepare(*std::move(args), 1);
  EXPECT_TRUE(call.ok()) << call.status();
  core::Engine engine(core::EngineOptions{0, 1});
  absl::StatusOr<core::ForwardResult> out =
      engine.Run(*call, core::CancelToken());
  EXPECT_TRUE(out.ok()) << out.status();
  return *std::move(out);
}

core::BackwardResult CoreBackward(const v1::FlashAttentionScoreGradRequest& r) {
  absl::StatusOr<core::BackwardArgs> args = ToBackwardArgs(r);
  EXPECT_TRUE(args.ok()) << args.status();
  absl::StatusOr<core::BackwardCall> call =
      core::BackwardCall::Prepare(*std::move(args), 1);
  EXPECT_TRUE(call.ok()) << call.status();
  core::Engine engine(core::EngineOptions{0, 1});
  absl::StatusOr<core::BackwardResult> out =
      engine.Run(*call, core::CancelToken());
  EXPECT_TRUE(out.ok()) << out.status();
  return *std::move(out);
}

void ExpectSameBytes(const v1::Tensor& wire, const core::HostTensor& core,
                     const std::string& what) {
  EXPECT_EQ(wire.dtype(), wire::ToWireDType(core.dtype)) << what;
  EXPECT_EQ(std::vector<int64_t>(wire.shape().begin(), wire.shape().end()),
            core.shape)
      << what;
  EXPECT_TRUE(wire.data() == core.bytes) << what << " differs from the core";
}

class ServerFeaturesTest : public ::testing::Test {
 protected:
  v1::FlashAttentionScoreResponse Forward(
      const v1::FlashAttentionScoreRequest& r) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::FlashAttentionScoreResponse response;
    const grpc::Status status =
        server_.stub().FlashAttentionScore(&context, r, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  v1::FlashAttentionScoreGradResponse Grad(
      const v1::FlashAttentionScoreGradRequest& r) {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::FlashAttentionScoreGradResponse response;
    const grpc::Status status =
        server_.stub().FlashAttentionScoreGrad(&context, r, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  TestServer server_;
};

TEST_F(ServerFeaturesTest, VarlenCausalDropoutForwardIsTheCoresAnswer) {
  ASSERT_TRUE(server_.started());
  const v1::FlashAttentionScoreRequest request = VarlenForward();
  const v1::FlashAttentionScoreResponse got = Forward(request);
  const core::ForwardResult want = CoreForward(request);
  ExpectSameBytes(got.attention_out(), want.attention_out, "attention_out");
  ExpectSameBytes(got.softmax_max(), want.softmax_max, "softmax_max");
  ExpectSameBytes(got.softmax_sum(), want.softmax_sum, "softmax_sum");
  EXPECT_THAT(got.softmax_max().shape(), ElementsAre(kT1, kN1, 8));
  EXPECT_THAT(got.attention_out().shape(), ElementsAre(kT1, kN1, kDv));
}

TEST_F(ServerFeaturesTest, GradRegeneratesTheSeededMaskWithOrWithoutResiduals) {
  ASSERT_TRUE(server_.started());
  const v1::FlashAttentionScoreRequest forward = VarlenForward();
  const v1::FlashAttentionScoreResponse fwd = Forward(forward);
  v1::FlashAttentionScoreGradRequest with = GradOf(forward);
  *with.mutable_softmax_max() = fwd.softmax_max();
  *with.mutable_softmax_sum() = fwd.softmax_sum();
  *with.mutable_attention_in() = fwd.attention_out();
  const v1::FlashAttentionScoreGradRequest without = GradOf(forward);
  const v1::FlashAttentionScoreGradResponse a = Grad(with);
  const v1::FlashAttentionScoreGradResponse b = Grad(without);
  // Recomputed residuals are the forward's own bits, so the grads agree
  // exactly; and both are the core's answer.
  EXPECT_EQ(a.dq().data(), b.dq().data());
  EXPECT_EQ(a.dk().data(), b.dk().data());
  EXPECT_EQ(a.dv().data(), b.dv().data());
  const core::BackwardResult want = CoreBackward(with);
  ExpectSameBytes(a.dq(), want.dq, "dq");
  ExpectSameBytes(a.dk(), want.dk, "dk");
  ExpectSameBytes(a.dv(), want.dv, "dv");
  EXPECT_FALSE(a.has_dpse());
  // Another seed gives another mask, hence other gradients.
  v1::FlashAttentionScoreGradRequest other = without;
  other.set_seed(4321);
  EXPECT_NE(Grad(other).dq().data(), b.dq().data());
}

TEST_F(ServerFeaturesTest, GradWithSlopesReturnsDpseShapedLikeTheSlopes) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreRequest forward = VarlenForward();
  // ALiBi needs Sq == Skv in every batch, and a pse no empty batch.
  forward.clear_actual_seq_qlen();
  forward.clear_actual_seq_kvlen();
  for (int64_t v : {2, 5, 9}) {
    forward.add_actual_seq_qlen(v);
    forward.add_actual_seq_kvlen(v);
  }
  *forward.mutable_key() = Random3d(kT1, kN2, kD, 2);
  *forward.mutable_value() = Random3d(kT1, kN2, kDv, 3);
  forward.set_sparse_mode(2);
  forward.set_pse_type(3);
  *forward.mutable_pse() = Fp32Tensor({kN1}, {0.5f, 0.25f, 0.125f, 0.0625f});
  forward.add_q_start_idx(2);
  const v1::FlashAttentionScoreGradRequest grad = GradOf(forward);
  const v1::FlashAttentionScoreGradResponse got = Grad(grad);
  ASSERT_TRUE(got.has_dpse());
  const core::BackwardResult want = CoreBackward(grad);
  ASSERT_TRUE(want.dpse.has_value());
  ExpectSameBytes(got.dpse(), *want.dpse, "dpse");
  EXPECT_THAT(got.dpse().shape(), ElementsAre(kN1));

  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::GetWorkspaceSizeRequest size_request;
  *size_request.mutable_flash_attention_score_grad() = grad;
  v1::GetWorkspaceSizeResponse size;
  ASSERT_TRUE(
      server_.stub().GetWorkspaceSize(&context, size_request, &size).ok());
  ASSERT_EQ(size.outputs_size(), 4);
  EXPECT_EQ(size.outputs(3).name(), "dpse");
  EXPECT_THAT(size.outputs(3).shape(), ElementsAre(kN1));
}

TEST_F(ServerFeaturesTest, Float8GradInputsGiveFloat32Gradients) {
  ASSERT_TRUE(server_.started());
  v1::FlashAttentionScoreGradRequest grad = GradOf(VarlenForward());
  for (v1::Tensor* t : {grad.mutable_query(), grad.mutable_key(),
                        grad.mutable_value(), grad.mutable_dy()}) {
    // Re-encode every fp32 value as FLOAT8_E4M3FN.
    const std::vector<float> values = Fp32Values(*t);
    std::string bytes(values.size(), '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      bytes[i] = static_cast<char>(core::FloatToFp8E4M3FN(values[i]));
    }
    t->set_dtype(v1::DATA_TYPE_FLOAT8_E4M3FN);
    t->set_data(bytes);
  }
  const v1::FlashAttentionScoreGradResponse got = Grad(grad);
  EXPECT_EQ(got.dq().dtype(), v1::DATA_TYPE_FLOAT32);
  const core::BackwardResult want = CoreBackward(grad);
  ExpectSameBytes(got.dq(), want.dq, "dq");
  ExpectSameBytes(got.dv(), want.dv, "dv");
}

}  // namespace
}  // namespace attnserve::server::testing
