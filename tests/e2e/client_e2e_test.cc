// The client library against a real attnserve process: numerics of forward
// and backward against a float64 reference, workspace queries, deadlines,
// error details and message sizes.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "attnserve/client/status_conversion.h"
#include "attnserve/client/tensor_helpers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::e2e {
namespace {

using ::attnserve::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;

// Dimensions of one attention problem; tensors are kept in canonical
// [B][N][S][D] order and placed into the wire layout when sent.
struct Dims {
  int64_t b, n1, n2, sq, skv, d;
};

int64_t Offset(const std::string& layout, int64_t bs, int64_t ns, int64_t ss,
               int64_t ds, int64_t b, int64_t n, int64_t s, int64_t d) {
  if (layout == "BNSD") return ((b * ns + n) * ss + s) * ds + d;
  if (layout == "SBH") return ((s * bs + b) * ns + n) * ds + d;
  return ((b * ss + s) * ns + n) * ds + d;  // BSH, BSND
}

std::vector<int64_t> Shape(const std::string& layout, int64_t b, int64_t n,
                           int64_t s, int64_t d) {
  if (layout == "BSH") return {b, s, n * d};
  if (layout == "SBH") return {s, b, n * d};
  if (layout == "BSND") return {b, s, n, d};
  return {b, n, s, d};
}

// Canonical values -> wire tensor in `layout`/`dtype`.
v1::Tensor ToWire(const std::vector<float>& canonical,
                  const std::string& layout, v1::DataType dtype, int64_t b,
                  int64_t n, int64_t s, int64_t d) {
  std::vector<float> placed(canonical.size());
  for (int64_t ib = 0; ib < b; ++ib)
    for (int64_t in = 0; in < n; ++in)
      for (int64_t is = 0; is < s; ++is)
        for (int64_t id = 0; id < d; ++id)
          placed[Offset(layout, b, n, s, d, ib, in, is, id)] =
              canonical[((ib * n + in) * s + is) * d + id];
  return MakeTensor(placed, Shape(layout, b, n, s, d), dtype).value();
}

// Wire tensor in `layout` -> canonical values (widened to float).
std::vector<float> FromWire(const v1::Tensor& t, const std::string& layout,
                            int64_t b, int64_t n, int64_t s, int64_t d) {
  const std::vector<float> placed = TensorToFloats(t).value();
  std::vector<float> canonical(placed.size());
  for (int64_t ib = 0; ib < b; ++ib)
    for (int64_t in = 0; in < n; ++in)
      for (int64_t is = 0; is < s; ++is)
        for (int64_t id = 0; id < d; ++id)
          canonical[((ib * n + in) * s + is) * d + id] =
              placed[Offset(layout, b, n, s, d, ib, in, is, id)];
  return canonical;
}

// Values as the server sees them: rounded through `dtype`.
std::vector<float> Rounded(const std::vector<float>& v, v1::DataType dtype) {
  return TensorToFloats(
             MakeTensor(v, {static_cast<int64_t>(v.size())}, dtype).value())
      .value();
}

struct Reference {
  std::vector<double> out, max, sum, dq, dk, dv;
};

// Float64 forward and backward of full (unmasked) attention with GQA.
Reference Attention(const Dims& x, const std::vector<float>& q,
                    const std::vector<float>& k, const std::vector<float>& v,
                    const std::vector<float>& dy, double scale) {
  Reference r;
  r.out.assign(x.b * x.n1 * x.sq * x.d, 0);
  r.max.assign(x.b * x.n1 * x.sq, 0);
  r.sum.assign(x.b * x.n1 * x.sq, 0);
  r.dq.assign(q.size(), 0);
  r.dk.assign(k.size(), 0);
  r.dv.assign(v.size(), 0);
  const int64_t g = x.n1 / x.n2;
  for (int64_t b = 0; b < x.b; ++b) {
    for (int64_t n = 0; n < x.n1; ++n) {
      const int64_t qo = (b * x.n1 + n) * x.sq * x.d;
      const int64_t ko = (b * x.n2 + n / g) * x.skv * x.d;
      std::vector<double> p(x.sq * x.skv);
      for (int64_t i = 0; i < x.sq; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j < x.skv; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < x.d; ++d)
            dot += double{q[qo + i * x.d + d]} * k[ko + j * x.d + d];
          p[i * x.skv + j] = scale * dot;
          m = std::max(m, p[i * x.skv + j]);
        }
        double l = 0;
        for (int64_t j = 0; j < x.skv; ++j) {
          p[i * x.skv + j] = std::exp(p[i * x.skv + j] - m);
          l += p[i * x.skv + j];
        }
        for (int64_t j = 0; j < x.skv; ++j) p[i * x.skv + j] /= l;
        r.max[(b * x.n1 + n) * x.sq + i] = m;
        r.sum[(b * x.n1 + n) * x.sq + i] = l;
        for (int64_t d = 0; d < x.d; ++d) {
          double o = 0;
          for (int64_t j = 0; j < x.skv; ++j)
            o += p[i * x.skv + j] * v[ko + j * x.d + d];
          r.out[qo + i * x.d + d] = o;
        }
      }
      if (dy.empty()) continue;
      for (int64_t i = 0; i < x.sq; ++i) {
        double rowsum = 0;  // sum_d dO * O
        for (int64_t d = 0; d < x.d; ++d)
          rowsum += dy[qo + i * x.d + d] * r.out[qo + i * x.d + d];
        for (int64_t j = 0; j < x.skv; ++j) {
          const double pij = p[i * x.skv + j];
          double dp = 0;
          for (int64_t d = 0; d < x.d; ++d) {
            dp += double{dy[qo + i * x.d + d]} * v[ko + j * x.d + d];
            r.dv[ko + j * x.d + d] += pij * dy[qo + i * x.d + d];
          }
          const double ds = pij * (dp - rowsum);
          for (int64_t d = 0; d < x.d; ++d) {
            r.dq[qo + i * x.d + d] += scale * ds * k[ko + j * x.d + d];
            r.dk[ko + j * x.d + d] += scale * ds * q[qo + i * x.d + d];
          }
        }
      }
    }
  }
  return r;
}

double MaxAbsDiff(const std::vector<float>& got,
                  const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    worst = std::max(worst, std::fabs(got[i] - want[i]));
  }
  return worst;
}

class ClientE2eTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    if (HasFatalFailure()) return;
    client_ =
        std::make_unique<Client>(Client::Connect(server_->target()).value());
  }
  void TearDown() override {
    // An idle client channel answers the server's graceful-shutdown
    // handshake only when gRPC's backup poller runs (every 5 s), and the
    // server waits for it. Closing the channel first (which completes
    // asynchronously) keeps the stop quick; correctness does not depend on it.
    client_.reset();
    absl::SleepFor(absl::Milliseconds(100));
    ServerTest::TearDown();
  }
  std::unique_ptr<Client> client_;
};

struct ForwardCase {
  v1::DataType dtype;
  std::string layout;
  double tolerance;
};

TEST_F(ClientE2eTest, ForwardMatchesFloat64ReferenceAcrossDtypesAndLayouts) {
  const Dims x{2, 4, 2, 13, 21, 16};
  const double scale = 0.25;
  for (const ForwardCase& c :
       {ForwardCase{v1::DATA_TYPE_FLOAT32, "BNSD", 1e-5},
        ForwardCase{v1::DATA_TYPE_FLOAT16, "BSH", 4e-3},
        ForwardCase{v1::DATA_TYPE_BFLOAT16, "SBH", 3e-2},
        ForwardCase{v1::DATA_TYPE_FLOAT32, "BSND", 1e-5}}) {
    SCOPED_TRACE(c.layout + " " + std::string(DataTypeName(c.dtype)));
    const std::vector<float> q =
        Rounded(RandomFloats(x.b * x.n1 * x.sq * x.d, 1), c.dtype);
    const std::vector<float> k =
        Rounded(RandomFloats(x.b * x.n2 * x.skv * x.d, 2), c.dtype);
    const std::vector<float> v =
        Rounded(RandomFloats(x.b * x.n2 * x.skv * x.d, 3), c.dtype);
    v1::FlashAttentionScoreRequest request;
    *request.mutable_query() =
        ToWire(q, c.layout, c.dtype, x.b, x.n1, x.sq, x.d);
    *request.mutable_key() =
        ToWire(k, c.layout, c.dtype, x.b, x.n2, x.skv, x.d);
    *request.mutable_value() =
        ToWire(v, c.layout, c.dtype, x.b, x.n2, x.skv, x.d);
    request.set_scale_value(scale);
    request.set_head_num(x.n1);
    request.set_input_layout(c.layout);
    absl::StatusOr<v1::FlashAttentionScoreResponse> response =
        client_->FlashAttentionScore(request);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->attention_out().dtype(), c.dtype);
    EXPECT_THAT(response->softmax_max().shape(),
                ElementsAre(x.b, x.n1, x.sq, 8));
    const Reference want = Attention(x, q, k, v, {}, scale);
    EXPECT_LE(MaxAbsDiff(FromWire(response->attention_out(), c.layout, x.b,
                                  x.n1, x.sq, x.d),
                         want.out),
              c.tolerance);
    std::vector<float> max_lane0, sum_lane0;
    const std::vector<float> max =
        TensorToFloats(response->softmax_max()).value();
    const std::vector<float> sum =
        TensorToFloats(response->softmax_sum()).value();
    for (size_t i = 0; i < max.size(); i += 8) {
      max_lane0.push_back(max[i]);
      sum_lane0.push_back(sum[i]);
    }
    EXPECT_LE(MaxAbsDiff(max_lane0, want.max), 1e-4);
    EXPECT_LE(MaxAbsDiff(sum_lane0, want.sum), 1e-3);
    EXPECT_GT(response->stats().flops(), 0);
  }
}

TEST_F(ClientE2eTest, BackwardMatchesFloat64Reference) {
  const Dims x{1, 4, 2, 17, 11, 8};
  const double scale = 0.35;
  const std::string layout = "BSND";
  const v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  const std::vector<float> q = RandomFloats(x.b * x.n1 * x.sq * x.d, 4);
  const std::vector<float> k = RandomFloats(x.b * x.n2 * x.skv * x.d, 5);
  const std::vector<float> v = RandomFloats(x.b * x.n2 * x.skv * x.d, 6);
  const std::vector<float> dy = RandomFloats(x.b * x.n1 * x.sq * x.d, 7);
  v1::FlashAttentionScoreRequest fwd;
  *fwd.mutable_query() = ToWire(q, layout, dtype, x.b, x.n1, x.sq, x.d);
  *fwd.mutable_key() = ToWire(k, layout, dtype, x.b, x.n2, x.skv, x.d);
  *fwd.mutable_value() = ToWire(v, layout, dtype, x.b, x.n2, x.skv, x.d);
  fwd.set_scale_value(scale);
  fwd.set_head_num(x.n1);
  fwd.set_input_layout(layout);
  absl::StatusOr<v1::FlashAttentionScoreResponse> out =
      client_->FlashAttentionScore(fwd);
  ASSERT_TRUE(out.ok()) << out.status();

  v1::FlashAttentionScoreGradRequest grad;
  *grad.mutable_query() = fwd.query();
  *grad.mutable_key() = fwd.key();
  *grad.mutable_value() = fwd.value();
  *grad.mutable_dy() = ToWire(dy, layout, dtype, x.b, x.n1, x.sq, x.d);
  *grad.mutable_softmax_max() = out->softmax_max();
  *grad.mutable_softmax_sum() = out->softmax_sum();
  *grad.mutable_attention_in() = out->attention_out();
  grad.set_scale_value(scale);
  grad.set_head_num(x.n1);
  grad.set_input_layout(layout);
  absl::StatusOr<v1::FlashAttentionScoreGradResponse> grads =
      client_->FlashAttentionScoreGrad(grad);
  ASSERT_TRUE(grads.ok()) << grads.status();
  EXPECT_FALSE(grads->has_dpse());

  const Reference want = Attention(x, q, k, v, dy, scale);
  EXPECT_LE(
      MaxAbsDiff(FromWire(grads->dq(), layout, x.b, x.n1, x.sq, x.d), want.dq),
      1e-4);
  EXPECT_LE(
      MaxAbsDiff(FromWire(grads->dk(), layout, x.b, x.n2, x.skv, x.d), want.dk),
      1e-4);
  EXPECT_LE(
      MaxAbsDiff(FromWire(grads->dv(), layout, x.b, x.n2, x.skv, x.d), want.dv),
      1e-4);
}

TEST_F(ClientE2eTest, WorkspaceSizeDescribesOutputsWithoutComputing) {
  v1::GetWorkspaceSizeRequest request;
  v1::FlashAttentionScoreRequest* fwd = request.mutable_flash_attention_score();
  *fwd->mutable_query() =
      MakeRandomTensor({1, 64, 4, 32}, v1::DATA_TYPE_FLOAT16, 1).value();
  *fwd->mutable_key() =
      MakeRandomTensor({1, 48, 2, 32}, v1::DATA_TYPE_FLOAT16, 2).value();
  *fwd->mutable_value() =
      MakeRandomTensor({1, 48, 2, 32}, v1::DATA_TYPE_FLOAT16, 3).value();
  fwd->set_head_num(4);
  fwd->set_input_layout("BSND");
  absl::StatusOr<v1::GetWorkspaceSizeResponse> response =
      client_->GetWorkspaceSize(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->flops(), 4.0 * 4 * 64 * 48 * 32);
  std::vector<std::string> names;
  for (const v1::TensorSpec& spec : response->outputs()) {
    names.push_back(spec.name());
    if (spec.name() == "attention_out") {
      EXPECT_EQ(spec.dtype(), v1::DATA_TYPE_FLOAT16);
      EXPECT_THAT(spec.shape(), ElementsAre(1, 64, 4, 32));
    }
    if (spec.name() == "softmax_max") {
      EXPECT_EQ(spec.dtype(), v1::DATA_TYPE_FLOAT32);
      EXPECT_THAT(spec.shape(), ElementsAre(1, 4, 64, 8));
    }
  }
  EXPECT_THAT(names, ::testing::IsSupersetOf(
                         {"attention_out", "softmax_max", "softmax_sum"}));
}

TEST_F(ClientE2eTest, InvalidRequestCarriesFieldViolations) {
  v1::FlashAttentionScoreRequest request;
  *request.mutable_query() =
      MakeRandomTensor({1, 2, 4, 8}, v1::DATA_TYPE_FLOAT32, 1).value();
  *request.mutable_key() = request.query();
  *request.mutable_value() = request.query();
  request.set_head_num(5);
  request.set_input_layout("BNSD");
  absl::StatusOr<v1::FlashAttentionScoreResponse> response =
      client_->FlashAttentionScore(request);
  EXPECT_THAT(response, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("head_num")));
  EXPECT_THAT(FieldViolations(response.status()),
              ::testing::Contains(Field(&FieldViolation::field, "head_num")));
}

TEST_F(ClientE2eTest, ExpiredDeadlineGivesDeadlineExceededAndServerStaysUp) {
  v1::FlashAttentionScoreRequest request;
  *request.mutable_query() =
      MakeRandomTensor({1, 8, 2048, 128}, v1::DATA_TYPE_FLOAT32, 1).value();
  *request.mutable_key() = request.query();
  *request.mutable_value() = request.query();
  request.set_head_num(8);
  request.set_input_layout("BNSD");
  EXPECT_THAT(client_->FlashAttentionScore(request, absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(client_->Health().value(), ServingStatus::kServing);
  EXPECT_TRUE(client_->GetServerInfo().ok());
}

TEST_F(ClientE2eTest, RequestsLargerThanGrpcDefaultLimitAreAccepted) {
  // 32 MiB query: far above gRPC's 4 MiB default on both sides.
  v1::GetWorkspaceSizeRequest request;
  v1::FlashAttentionScoreRequest* fwd = request.mutable_flash_attention_score();
  *fwd->mutable_query() =
      MakeRandomTensor({1, 8, 65536, 16}, v1::DATA_TYPE_FLOAT32, 1).value();
  *fwd->mutable_key() =
      MakeRandomTensor({1, 8, 16, 16}, v1::DATA_TYPE_FLOAT32, 2).value();
  *fwd->mutable_value() = fwd->key();
  fwd->set_head_num(8);
  fwd->set_input_layout("BNSD");
  absl::StatusOr<v1::GetWorkspaceSizeResponse> response =
      client_->GetWorkspaceSize(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->flops(), 4.0 * 8 * 65536 * 16 * 16);
}

}  // namespace
}  // namespace attnserve::e2e
