// Compute calls with resident tensors on a real in-process server: handles
// mixed with data, retention.keep, a backward by handles that is
// bit-identical to the one that sends everything, outputs_by_handle, and the
// refusals (unknown handle, mismatching dtype/shape, another token, a store
// too small for what a call keeps). The CI-sized version of the "tensors
// beyond one message" path runs here with a small message limit and a small
// chunk size.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/reference.h"
#include "tests/server/resident_support.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server::testing {
namespace {

using ::attnserve::test::IsOk;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Key;
using ::testing::UnorderedElementsAre;

// GQA, Sq != Skv: 2 query heads on 1 kv head.
RefProblem Problem() {
  RefProblem p;
  p.b = 2, p.n1 = 2, p.n2 = 1, p.s1 = 24, p.s2 = 40, p.d = 16, p.dv = 16;
  p.scale = 0.25;
  return p;
}

v1::FlashAttentionScoreRequest Forward(RefProblem* p) {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() =
      Pack("BNSD", p->q_dims(), RandomValues(p->q_dims().count(), 1));
  *r.mutable_key() =
      Pack("BNSD", p->k_dims(), RandomValues(p->k_dims().count(), 2));
  *r.mutable_value() =
      Pack("BNSD", p->v_dims(), RandomValues(p->v_dims().count(), 3));
  p->q = Unpack("BNSD", p->q_dims(), r.query());
  p->k = Unpack("BNSD", p->k_dims(), r.key());
  p->v = Unpack("BNSD", p->v_dims(), r.value());
  r.set_scale_value(p->scale);
  r.set_head_num(p->n1);
  r.set_input_layout("BNSD");
  return r;
}

// The backward of `forward`'s problem, everything sent as data.
v1::FlashAttentionScoreGradRequest Backward(
    const v1::FlashAttentionScoreRequest& forward,
    const v1::FlashAttentionScoreResponse& out, const RefProblem& p) {
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = forward.query();
  *r.mutable_key() = forward.key();
  *r.mutable_value() = forward.value();
  *r.mutable_dy() =
      Pack("BNSD", p.out_dims(), RandomValues(p.out_dims().count(), 4));
  *r.mutable_attention_in() = out.attention_out();
  *r.mutable_softmax_max() = out.softmax_max();
  *r.mutable_softmax_sum() = out.softmax_sum();
  r.set_scale_value(p.scale);
  r.set_head_num(p.n1);
  r.set_input_layout("BNSD");
  return r;
}

v1::Tensor ByHandle(const std::string& handle) {
  v1::Tensor t;
  t.set_handle(handle);
  return t;
}

grpc::Status Call(TestServer& server, const v1::FlashAttentionScoreRequest& r,
                  v1::FlashAttentionScoreResponse* out,
                  const std::string& authorization = "") {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  if (!authorization.empty()) {
    context.AddMetadata("authorization", authorization);
  }
  return server.stub().FlashAttentionScore(&context, r, out);
}

grpc::Status Call(TestServer& server,
                  const v1::FlashAttentionScoreGradRequest& r,
                  v1::FlashAttentionScoreGradResponse* out) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  return server.stub().FlashAttentionScoreGrad(&context, r, out);
}

class ResidentComputeTest : public ::testing::Test {
 protected:
  TensorStore& store() { return *server_.server().tensor_store(); }
  TestServer server_;
};

TEST_F(ResidentComputeTest, HandlesAndDataMixFreely) {
  ASSERT_TRUE(server_.started());
  RefProblem p = Problem();
  const v1::FlashAttentionScoreRequest by_data = Forward(&p);
  v1::FlashAttentionScoreResponse want;
  ASSERT_TRUE(Call(server_, by_data, &want).ok());
  EXPECT_THAT(want.handles(), IsEmpty());

  absl::StatusOr<v1::PutTensorResponse> key =
      PutRaw(server_.stub(), by_data.key(), /*chunk_bytes=*/1000);
  ASSERT_THAT(key, IsOk());
  v1::FlashAttentionScoreRequest mixed = by_data;
  *mixed.mutable_key() = ByHandle(key->handle());
  // A handle may also state dtype and shape; they must then match.
  mixed.mutable_key()->set_dtype(v1::DATA_TYPE_FLOAT32);
  *mixed.mutable_key()->mutable_shape() = by_data.key().shape();
  v1::FlashAttentionScoreResponse got;
  ASSERT_TRUE(Call(server_, mixed, &got).ok());
  EXPECT_TRUE(got.attention_out().data() == want.attention_out().data());
  EXPECT_TRUE(got.softmax_max().data() == want.softmax_max().data());
  // Inputs that arrived by handle keep their handle; nothing else is kept.
  EXPECT_EQ(got.handles().size(), 1u);
  EXPECT_EQ(got.handles().at("key"), key->handle());
  EXPECT_EQ(store().entries(), 1);
}

TEST_F(ResidentComputeTest, BackwardByHandlesIsBitIdenticalToByData) {
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest forward = Forward(&p);
  v1::FlashAttentionScoreResponse plain;
  ASSERT_TRUE(Call(server_, forward, &plain).ok());

  v1::FlashAttentionScoreRequest keep = forward;
  keep.mutable_retention()->set_keep(true);
  keep.mutable_retention()->set_ttl_seconds(60);
  v1::FlashAttentionScoreResponse kept;
  ASSERT_TRUE(Call(server_, keep, &kept).ok());
  // The outputs still come back as data, the same bytes as without keep.
  EXPECT_TRUE(kept.attention_out().data() == plain.attention_out().data());
  EXPECT_TRUE(kept.softmax_sum().data() == plain.softmax_sum().data());
  EXPECT_THAT(kept.handles(),
              UnorderedElementsAre(Key("query"), Key("key"), Key("value"),
                                   Key("attention_out"), Key("softmax_max"),
                                   Key("softmax_sum")));
  EXPECT_EQ(store().entries(), 6);
  const uint64_t stored =
      forward.query().data().size() + forward.key().data().size() +
      forward.value().data().size() + plain.attention_out().data().size() +
      plain.softmax_max().data().size() + plain.softmax_sum().data().size();
  EXPECT_EQ(store().bytes(), stored);

  const v1::FlashAttentionScoreGradRequest full = Backward(forward, plain, p);
  v1::FlashAttentionScoreGradResponse want;
  ASSERT_TRUE(Call(server_, full, &want).ok());

  v1::FlashAttentionScoreGradRequest by_handles = full;
  const auto& h = kept.handles();
  *by_handles.mutable_query() = ByHandle(h.at("query"));
  *by_handles.mutable_key() = ByHandle(h.at("key"));
  *by_handles.mutable_value() = ByHandle(h.at("value"));
  *by_handles.mutable_attention_in() = ByHandle(h.at("attention_out"));
  *by_handles.mutable_softmax_max() = ByHandle(h.at("softmax_max"));
  *by_handles.mutable_softmax_sum() = ByHandle(h.at("softmax_sum"));
  EXPECT_LE(by_handles.ByteSizeLong() * 5, full.ByteSizeLong())
      << "only dy should travel";
  v1::FlashAttentionScoreGradResponse got;
  ASSERT_TRUE(Call(server_, by_handles, &got).ok());
  for (const auto& [name, a, b] :
       {std::make_tuple("dq", &got.dq(), &want.dq()),
        std::make_tuple("dk", &got.dk(), &want.dk()),
        std::make_tuple("dv", &got.dv(), &want.dv())}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(a->data().size(), b->data().size());
    EXPECT_TRUE(a->data() == b->data()) << "not bit-identical";
  }
  EXPECT_THAT(got.handles(),
              UnorderedElementsAre(Key("query"), Key("key"), Key("value"),
                                   Key("attention_in"), Key("softmax_max"),
                                   Key("softmax_sum")));
  EXPECT_EQ(got.handles().at("attention_in"), h.at("attention_out"));

  // And they agree with the float64 reference (not only with each other).
  p.dy = Unpack("BNSD", p.out_dims(), full.dy());
  const RefResult ref = ReferenceAttention(p);
  const std::vector<double> dq = Unpack("BNSD", p.q_dims(), got.dq());
  ASSERT_EQ(dq.size(), ref.dq.size());
  for (size_t i = 0; i < dq.size(); ++i) {
    ASSERT_NEAR(dq[i], ref.dq[i], 1e-4 * (1 + std::abs(ref.dq[i]))) << i;
  }
}

TEST_F(ResidentComputeTest, OutputsByHandleCarryNoDataAndDownload) {
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest forward = Forward(&p);
  v1::FlashAttentionScoreResponse plain;
  ASSERT_TRUE(Call(server_, forward, &plain).ok());

  forward.mutable_retention()->set_outputs_by_handle(true);
  v1::FlashAttentionScoreResponse got;
  ASSERT_TRUE(Call(server_, forward, &got).ok());
  EXPECT_TRUE(got.attention_out().data().empty());
  EXPECT_EQ(got.attention_out().dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(got.attention_out().shape(), ElementsAre(p.b, p.n1, p.s1, p.dv));
  // Only the outputs are kept (not the inputs: keep is off).
  EXPECT_THAT(got.handles(),
              UnorderedElementsAre(Key("attention_out"), Key("softmax_max"),
                                   Key("softmax_sum")));
  EXPECT_EQ(got.attention_out().handle(), got.handles().at("attention_out"));
  absl::StatusOr<v1::Tensor> out =
      GetRaw(server_.stub(), got.handles().at("attention_out"));
  ASSERT_THAT(out, IsOk());
  EXPECT_TRUE(out->data() == plain.attention_out().data());
  EXPECT_EQ(store().entries(), 3);
}

TEST_F(ResidentComputeTest, UnknownHandleIsNotFoundNamingTheField) {
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest r = Forward(&p);
  *r.mutable_value() = ByHandle(std::string(32, '0'));
  v1::FlashAttentionScoreResponse out;
  const grpc::Status status = Call(server_, r, &out);
  EXPECT_EQ(status.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(status.error_message(),
              AllOf(HasSubstr("value.handle"), HasSubstr("send the data")));
}

TEST_F(ResidentComputeTest, AHandleWhoseStatedDtypeOrShapeDiffersIsRefused) {
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest r = Forward(&p);
  absl::StatusOr<v1::PutTensorResponse> key = PutRaw(server_.stub(), r.key());
  ASSERT_THAT(key, IsOk());
  {
    v1::FlashAttentionScoreRequest wrong = r;
    *wrong.mutable_key() = ByHandle(key->handle());
    wrong.mutable_key()->set_dtype(v1::DATA_TYPE_FLOAT16);
    v1::FlashAttentionScoreResponse out;
    const grpc::Status status = Call(server_, wrong, &out);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("key.dtype"));
  }
  {
    v1::FlashAttentionScoreRequest wrong = r;
    *wrong.mutable_key() = ByHandle(key->handle());
    for (int64_t d : {p.b, p.n2, p.s2 + 1, p.d}) {
      wrong.mutable_key()->add_shape(d);
    }
    v1::FlashAttentionScoreResponse out;
    const grpc::Status status = Call(server_, wrong, &out);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("key.shape"));
  }
  {
    v1::FlashAttentionScoreRequest both = r;  // handle and data at once
    both.mutable_key()->set_handle(key->handle());
    v1::FlashAttentionScoreResponse out;
    const grpc::Status status = Call(server_, both, &out);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("key.data"));
  }
}

TEST(ResidentComputeStoreTest, AKeepThatDoesNotFitIsRefusedBeforeTheRun) {
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest r = Forward(&p);
  ServerOptions options = TestServer::DefaultOptions();
  options.tensor_store_bytes = r.query().data().size();  // far too small
  TestServer server(options);
  r.mutable_retention()->set_keep(true);
  v1::FlashAttentionScoreResponse out;
  const grpc::Status status = Call(server, r, &out);
  EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("tensor store"));
  EXPECT_EQ(server.server().tensor_store()->bytes(), 0u);
  EXPECT_EQ(server.server().tensor_store()->entries(), 0);
  // Without keep the same call runs.
  r.clear_retention();
  EXPECT_TRUE(Call(server, r, &out).ok());
}

TEST(ResidentComputeOwnerTest, AnotherTokensHandleIsNotFoundInACall) {
  const std::string tokens =
      absl::StrCat(::testing::TempDir(), "/resident_compute_tokens_", getpid());
  {
    std::ofstream out(tokens);
    out << "token-a-0123456789abcdef\ntoken-b-0123456789abcdef\n";
  }
  ServerOptions options = TestServer::DefaultOptions();
  options.auth_token_file = tokens;
  TestServer server(options);
  const std::string a = "Bearer token-a-0123456789abcdef";
  const std::string b = "Bearer token-b-0123456789abcdef";
  RefProblem p = Problem();
  v1::FlashAttentionScoreRequest r = Forward(&p);
  absl::StatusOr<v1::PutTensorResponse> key =
      PutRaw(server.stub(), r.key(), 1 << 20, std::nullopt, a);
  ASSERT_THAT(key, IsOk());
  *r.mutable_key() = ByHandle(key->handle());
  v1::FlashAttentionScoreResponse out;
  EXPECT_TRUE(Call(server, r, &out, a).ok());
  const grpc::Status foreign = Call(server, r, &out, b);
  EXPECT_EQ(foreign.error_code(), grpc::NOT_FOUND);
  EXPECT_THAT(foreign.error_message(), HasSubstr("key.handle"));
  std::remove(tokens.c_str());
}

// The path of tensors larger than any message: query, key and value
// uploaded by PutTensor in chunks, the forward by handles with its outputs
// by handle, attention_out downloaded by GetTensor and its rows checked
// against a float64 reference computed from the same generator.
struct BeyondCase {
  int64_t b, n, s, d;
  int64_t max_message_bytes;
  int64_t chunk_bytes;    // PutTensor and GetTensor messages
  int64_t rows_to_check;  // spread over the whole output
};

// Value `i` of the reproducible FLOAT32 tensor `seed`, in [-1, 1).
float Generated(uint64_t seed, uint64_t i) {
  uint64_t z = (seed << 40) + i + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) / (1 << 23) - 1.0);
}

v1::Tensor GeneratedTensor(uint64_t seed, const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  v1::Tensor t;
  t.set_dtype(v1::DATA_TYPE_FLOAT32);
  for (int64_t d : shape) t.add_shape(d);
  std::string* data = t.mutable_data();
  data->resize(static_cast<size_t>(count) * sizeof(float));
  for (int64_t i = 0; i < count; ++i) {
    const float v = Generated(seed, static_cast<uint64_t>(i));
    std::memcpy(data->data() + i * sizeof(float), &v, sizeof(float));
  }
  return t;
}

void RunBeyondTheMessageLimit(const BeyondCase& c) {
  ServerOptions options = TestServer::DefaultOptions();
  options.max_message_bytes = c.max_message_bytes;
  options.tensor_chunk_bytes = c.chunk_bytes;
  options.max_tensor_elements = int64_t{1} << 31;
  TestServer server(options);
  ASSERT_TRUE(server.started());
  const std::vector<int64_t> shape = {c.b, c.n, c.s, c.d};
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  v1::FlashAttentionScoreRequest r;
  for (const auto& [field, seed] :
       {std::make_pair(r.mutable_query(), uint64_t{1}),
        std::make_pair(r.mutable_key(), uint64_t{2}),
        std::make_pair(r.mutable_value(), uint64_t{3})}) {
    absl::StatusOr<v1::PutTensorResponse> put =
        PutRaw(server.stub(), GeneratedTensor(seed, shape),
               static_cast<size_t>(c.chunk_bytes));
    ASSERT_THAT(put, IsOk());
    *field = ByHandle(put->handle());
  }
  r.set_scale_value(scale);
  r.set_head_num(c.n);
  r.set_input_layout("BNSD");
  {  // Outputs as data would not fit a message.
    v1::FlashAttentionScoreResponse out;
    const grpc::Status status = Call(server, r, &out);
    EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(status.error_message(), HasSubstr("--max_message_bytes"));
  }
  r.mutable_retention()->set_outputs_by_handle(true);
  v1::FlashAttentionScoreResponse out;
  {
    grpc::ClientContext context;
    SetTestDeadline(&context, absl::Minutes(30));
    const grpc::Status status =
        server.stub().FlashAttentionScore(&context, r, &out);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  int messages = 0;
  absl::StatusOr<v1::Tensor> attention_out =
      GetRaw(server.stub(), out.handles().at("attention_out"), "", &messages);
  ASSERT_THAT(attention_out, IsOk());
  const int64_t rows = c.b * c.n * c.s;
  const int64_t bytes = rows * c.d * 4;
  ASSERT_EQ(static_cast<int64_t>(attention_out->data().size()), bytes);
  EXPECT_EQ(messages, (bytes + c.chunk_bytes - 1) / c.chunk_bytes);
  // Rows spread over the output, each against the float64 definition.
  const int64_t step = std::max<int64_t>(1, rows / c.rows_to_check);
  std::vector<double> scores(static_cast<size_t>(c.s));
  for (int64_t row = 0; row < rows; row += step) {
    const int64_t head = row / c.s;  // (b, n) of this row
    const uint64_t kv = static_cast<uint64_t>(head * c.s * c.d);
    double top = -1e300;
    for (int64_t j = 0; j < c.s; ++j) {
      double dot = 0;
      for (int64_t x = 0; x < c.d; ++x) {
        dot += static_cast<double>(
                   Generated(1, static_cast<uint64_t>(row * c.d + x))) *
               Generated(2, kv + static_cast<uint64_t>(j * c.d + x));
      }
      scores[static_cast<size_t>(j)] = dot * scale;
      top = std::max(top, dot * scale);
    }
    double sum = 0;
    for (double& v : scores) sum += (v = std::exp(v - top));
    for (int64_t x = 0; x < c.d; ++x) {
      double want = 0;
      for (int64_t j = 0; j < c.s; ++j) {
        want += scores[static_cast<size_t>(j)] *
                Generated(3, kv + static_cast<uint64_t>(j * c.d + x));
      }
      want /= sum;
      float got;
      std::memcpy(&got, attention_out->data().data() + (row * c.d + x) * 4, 4);
      ASSERT_NEAR(got, want, 1e-5 * (1 + std::abs(want)))
          << "row " << row << " column " << x;
    }
  }
}

// CI size: a 64 KiB message limit, 4 KiB chunks, each of query/key/value
// four messages' worth; every row checked.
TEST(ResidentComputeLargeTest, TensorsBeyondTheMessageLimitGoByHandle) {
  RunBeyondTheMessageLimit({/*b=*/1, /*n=*/2, /*s=*/512, /*d=*/64,
                            /*max_message_bytes=*/64 << 10,
                            /*chunk_bytes=*/4 << 10,
                            /*rows_to_check=*/1024});
}

// The real thing, opt-in (ATTNSERVE_LARGE_TESTS=1; about 14 GiB of memory
// and minutes of compute): query, key and value of 2.25 GiB each, beyond
// protobuf's 2 GiB message limit, with the default 1 GiB message limit.
TEST(ResidentComputeLargeTest, TensorsBeyondTwoGibGoByHandle) {
  const char* opt_in = std::getenv("ATTNSERVE_LARGE_TESTS");
  if (opt_in == nullptr || std::string(opt_in) != "1") {
    GTEST_SKIP() << "set ATTNSERVE_LARGE_TESTS=1 to run (about 14 GiB)";
  }
  RunBeyondTheMessageLimit({/*b=*/72, /*n=*/256, /*s=*/256, /*d=*/128,
                            /*max_message_bytes=*/int64_t{1} << 30,
                            /*chunk_bytes=*/1 << 20,
                            /*rows_to_check=*/64});
}

}  // namespace
}  // namespace attnserve::server::testing
