// The one pipeline every compute RPC takes, seen from a client: for every
// operator GetWorkspaceSize reports exactly what the call then leases (and
// its FLOPs and outputs), threads follow the cost, and NSA requests are
// admitted like the others: charged to the memory budget and queued in the
// lane their FLOPs call for.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/wire/tensor.h"
#include "attnserve/wire/tensor_fields.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/proto_convert.h"
#include "server/request_log.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"
#include "tests/testing/nsa_requests.h"

namespace attnserve::server::testing {
namespace {

using ::attnserve::test::NsaForwardRequest;
using ::attnserve::test::NsaGradRequest;
using ::testing::HasSubstr;

using Stub = v1::AttentionService::Stub;

// Name, dtype and shape of one output.
struct Spec {
  std::string name;
  int dtype = 0;
  std::vector<int64_t> shape;
  bool operator==(const Spec& o) const {
    return name == o.name && dtype == o.dtype && shape == o.shape;
  }
  friend std::ostream& operator<<(std::ostream& os, const Spec& s) {
    return os << s.name << ":" << s.dtype << ":" << s.shape.size();
  }
};

// The tensors set in `response`, in field order.
std::vector<Spec> TensorsOf(const google::protobuf::Message& response) {
  std::vector<Spec> specs;
  wire::ForEachTensorField(
      response,
      [&](const google::protobuf::FieldDescriptor& field, const v1::Tensor& t) {
        specs.push_back(
            Spec{field.name(), t.dtype(),
                 std::vector<int64_t>(t.shape().begin(), t.shape().end())});
      });
  return specs;
}

std::vector<Spec> SpecsOf(const v1::GetWorkspaceSizeResponse& size) {
  std::vector<Spec> specs;
  for (const v1::TensorSpec& s : size.outputs()) {
    specs.push_back(
        Spec{s.name(), s.dtype(),
             std::vector<int64_t>(s.shape().begin(), s.shape().end())});
  }
  return specs;
}

// The response type of a stub method.
template <typename Method>
struct ResponseOf;
template <typename Request, typename Response>
struct ResponseOf<grpc::Status (Stub::*)(grpc::ClientContext*, const Request&,
                                         Response*)> {
  using type = Response;
};

// What one call returned.
struct Outcome {
  grpc::Status status;
  v1::ExecutionStats stats;
  std::vector<Spec> outputs;
};

template <typename Request, typename Response>
Outcome Call(Stub& stub,
             grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                          Response*),
             const Request& request, Response* response) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  Outcome outcome;
  outcome.status = (stub.*method)(&context, request, response);
  outcome.stats = response->stats();
  outcome.outputs = TensorsOf(*response);
  return outcome;
}

v1::GetWorkspaceSizeResponse SizeOf(Stub& stub,
                                    const v1::GetWorkspaceSizeRequest& r) {
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::GetWorkspaceSizeResponse response;
  const grpc::Status status = stub.GetWorkspaceSize(&context, r, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

// B=1, N=4, S=256, D=32 BNSD, random values: 3.4e7 FLOPs forward.
v1::FlashAttentionScoreRequest AttentionForward() {
  const Bnsd dims{1, 4, 256, 32};
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", dims, RandomValues(dims.count(), 1));
  *r.mutable_key() = Pack("BNSD", dims, RandomValues(dims.count(), 2));
  *r.mutable_value() = Pack("BNSD", dims, RandomValues(dims.count(), 3));
  r.set_head_num(4);
  r.set_input_layout("BNSD");
  r.set_scale_value(0.125);
  return r;
}

// The grad of `f`; with the forward's residuals when `forward` is given,
// otherwise the server recomputes them.
v1::FlashAttentionScoreGradRequest AttentionGrad(
    const v1::FlashAttentionScoreRequest& f,
    const v1::FlashAttentionScoreResponse* forward) {
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = f.query();
  *r.mutable_key() = f.key();
  *r.mutable_value() = f.value();
  *r.mutable_dy() = f.value();
  if (forward != nullptr) {
    *r.mutable_attention_in() = forward->attention_out();
    *r.mutable_softmax_max() = forward->softmax_max();
    *r.mutable_softmax_sum() = forward->softmax_sum();
  }
  r.set_head_num(f.head_num());
  r.set_input_layout(f.input_layout());
  r.set_scale_value(f.scale_value());
  return r;
}

// GQA G=2 over three batches, causal, bf16.
test::NsaCaseConfig NsaConfig() {
  test::NsaCaseConfig config;
  config.dtype = core::DType::kBFloat16;
  config.sparse_mode = 2;
  config.pattern = test::NsaIndexPattern::kLocal;
  config.seed = 7;
  return config;
}

// One call of a compute RPC and the GetWorkspaceSize request for the same.
struct OperatorCase {
  std::string name;
  v1::GetWorkspaceSizeRequest size;
  std::function<Outcome(Stub&)> call;
};

// Every compute operator, the grad with and without residuals. The grads'
// residuals come from forwards run on `stub`.
std::vector<OperatorCase> EveryOperator(Stub& stub, const test::NsaCase& nsa) {
  std::vector<OperatorCase> cases;
  const v1::FlashAttentionScoreRequest forward = AttentionForward();
  v1::FlashAttentionScoreResponse forward_out;
  EXPECT_TRUE(Call(stub, &Stub::FlashAttentionScore, forward, &forward_out)
                  .status.ok());
  OperatorCase c{"FlashAttentionScore", {}, nullptr};
  *c.size.mutable_flash_attention_score() = forward;
  c.call = [forward](Stub& s) {
    v1::FlashAttentionScoreResponse r;
    return Call(s, &Stub::FlashAttentionScore, forward, &r);
  };
  cases.push_back(c);
  for (const bool residuals : {true, false}) {
    const v1::FlashAttentionScoreGradRequest grad =
        AttentionGrad(forward, residuals ? &forward_out : nullptr);
    c = OperatorCase{residuals ? "FlashAttentionScoreGrad"
                               : "FlashAttentionScoreGrad/recompute",
                     {},
                     nullptr};
    *c.size.mutable_flash_attention_score_grad() = grad;
    c.call = [grad](Stub& s) {
      v1::FlashAttentionScoreGradResponse r;
      return Call(s, &Stub::FlashAttentionScoreGrad, grad, &r);
    };
    cases.push_back(c);
  }
  const v1::NsaSelectedAttentionRequest nsa_forward = NsaForwardRequest(nsa);
  v1::NsaSelectedAttentionResponse nsa_out;
  EXPECT_TRUE(Call(stub, &Stub::NsaSelectedAttention, nsa_forward, &nsa_out)
                  .status.ok());
  c = OperatorCase{"NsaSelectedAttention", {}, nullptr};
  *c.size.mutable_nsa_selected_attention() = nsa_forward;
  c.call = [nsa_forward](Stub& s) {
    v1::NsaSelectedAttentionResponse r;
    return Call(s, &Stub::NsaSelectedAttention, nsa_forward, &r);
  };
  cases.push_back(c);
  const v1::NsaSelectedAttentionGradRequest nsa_grad =
      NsaGradRequest(nsa, nsa_out);
  c = OperatorCase{"NsaSelectedAttentionGrad", {}, nullptr};
  *c.size.mutable_nsa_selected_attention_grad() = nsa_grad;
  c.call = [nsa_grad](Stub& s) {
    v1::NsaSelectedAttentionGradResponse r;
    return Call(s, &Stub::NsaSelectedAttentionGrad, nsa_grad, &r);
  };
  cases.push_back(c);
  return cases;
}

ServerOptions Options(int threads_per_request, double flops_per_thread) {
  ServerOptions options = TestServer::DefaultOptions();
  options.threads_per_request = threads_per_request;
  options.flops_per_thread = flops_per_thread;
  return options;
}

// flops_per_thread: every call on all 4 threads, on 1, and in between.
class WorkspaceSizeTest : public ::testing::TestWithParam<double> {};

TEST_P(WorkspaceSizeTest, EqualsWhatEveryOperatorsCallLeases) {
  TestServer server(Options(4, GetParam()));
  ASSERT_TRUE(server.started());
  const test::NsaCase nsa(NsaConfig());
  for (const OperatorCase& c : EveryOperator(server.stub(), nsa)) {
    SCOPED_TRACE(c.name);
    const v1::GetWorkspaceSizeResponse size = SizeOf(server.stub(), c.size);
    const Outcome got = c.call(server.stub());
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_GT(size.workspace_bytes(), 0u);
    EXPECT_EQ(got.stats.workspace_bytes(), size.workspace_bytes());
    EXPECT_EQ(got.stats.flops(), size.flops());
    EXPECT_EQ(got.outputs, SpecsOf(size));
  }
}

INSTANTIATE_TEST_SUITE_P(ThreadsFromCost, WorkspaceSizeTest,
                         ::testing::Values(0.0, 1e12, 1.7e7));

// NSA calls get their threads from their cost like the others: planned for
// one thread when small, not for every thread the server may give.
TEST(PipelineTest, NsaThreadsFollowTheCost) {
  const test::NsaCase nsa(NsaConfig());
  v1::GetWorkspaceSizeRequest request;
  *request.mutable_nsa_selected_attention() = NsaForwardRequest(nsa);
  TestServer all_threads(Options(4, 0));
  TestServer by_cost(Options(4, 1e12));
  ASSERT_TRUE(all_threads.started() && by_cost.started());
  const uint64_t four = SizeOf(all_threads.stub(), request).workspace_bytes();
  const uint64_t one = SizeOf(by_cost.stub(), request).workspace_bytes();
  const absl::StatusOr<core::NsaForwardCall> single =
      core::NsaForwardCall::Prepare(
          ToNsaForwardArgs(request.nsa_selected_attention()).value(), 1);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(one, single->workspace_bytes());
  EXPECT_LT(one, four);
}

// What admission charges for `request`: the request as received, its
// outputs and its workspace.
uint64_t AdmissionBytes(const google::protobuf::Message& request,
                        const v1::GetWorkspaceSizeResponse& size) {
  uint64_t bytes = request.ByteSizeLong() + size.workspace_bytes();
  for (const v1::TensorSpec& spec : size.outputs()) {
    v1::Tensor t;
    t.set_dtype(spec.dtype());
    *t.mutable_shape() = spec.shape();
    bytes += wire::ByteSize(t, spec.name()).value();
  }
  return bytes;
}

ServerOptions WithBudget(uint64_t budget) {
  ServerOptions options = TestServer::DefaultOptions();
  options.memory_budget_bytes = budget;
  return options;
}

TEST(PipelineTest, NsaRequestsAreChargedToTheMemoryBudget) {
  const test::NsaCase nsa(NsaConfig());
  TestServer unlimited(WithBudget(0));
  ASSERT_TRUE(unlimited.started());
  const v1::NsaSelectedAttentionRequest forward = NsaForwardRequest(nsa);
  v1::NsaSelectedAttentionResponse forward_out;
  ASSERT_TRUE(
      Call(unlimited.stub(), &Stub::NsaSelectedAttention, forward, &forward_out)
          .status.ok());
  const v1::NsaSelectedAttentionGradRequest grad =
      NsaGradRequest(nsa, forward_out);

  v1::GetWorkspaceSizeRequest sizing;
  *sizing.mutable_nsa_selected_attention() = forward;
  const uint64_t forward_bytes =
      AdmissionBytes(forward, SizeOf(unlimited.stub(), sizing));
  *sizing.mutable_nsa_selected_attention_grad() = grad;
  const uint64_t grad_bytes =
      AdmissionBytes(grad, SizeOf(unlimited.stub(), sizing));

  // On a server whose budget is `bytes` (fits) or one byte less, the call
  // of `method` with `request` (costing `bytes`) runs or is refused.
  const auto expect_charged = [](auto method, const auto& request,
                                 uint64_t bytes, bool fits) {
    SCOPED_TRACE(fits ? "budget = cost" : "budget = cost - 1");
    TestServer server(WithBudget(fits ? bytes : bytes - 1));
    typename ResponseOf<decltype(method)>::type response;
    const Outcome got = Call(server.stub(), method, request, &response);
    if (fits) {
      EXPECT_TRUE(got.status.ok()) << got.status.error_message();
      return;
    }
    EXPECT_EQ(got.status.error_code(), grpc::RESOURCE_EXHAUSTED);
    EXPECT_THAT(got.status.error_message(),
                HasSubstr(absl::StrCat("memory budget: the request needs ",
                                       bytes, " bytes")));
  };
  for (const bool fits : {false, true}) {
    expect_charged(&Stub::NsaSelectedAttention, forward, forward_bytes, fits);
    expect_charged(&Stub::NsaSelectedAttentionGrad, grad, grad_bytes, fits);
  }
}

// Keeps the log records of one operator.
class Records final : public RequestObserver {
 public:
  explicit Records(std::string op) : op_(std::move(op)) {
    AddRequestObserver(this);
  }
  ~Records() override { RemoveRequestObserver(this); }

  void OnRequest(const RequestRecord& record) override {
    absl::MutexLock lock(&mu_);
    if (record.op == op_) records_.push_back(record);
  }
  std::vector<RequestRecord> records() const {
    absl::MutexLock lock(&mu_);
    return records_;
  }

 private:
  const std::string op_;
  mutable absl::Mutex mu_;
  std::vector<RequestRecord> records_ ABSL_GUARDED_BY(mu_);
};

TEST(PipelineTest, NsaRequestsTakeTheLaneOfTheirCost) {
  const test::NsaCase nsa(NsaConfig());
  const v1::NsaSelectedAttentionRequest forward = NsaForwardRequest(nsa);
  TestServer sizer;
  ASSERT_TRUE(sizer.started());
  v1::GetWorkspaceSizeRequest sizing;
  *sizing.mutable_nsa_selected_attention() = forward;
  const double flops = SizeOf(sizer.stub(), sizing).flops();
  ASSERT_GT(flops, 1);

  for (const bool large : {true, false}) {
    SCOPED_TRACE(large ? "above small_request_flops" : "at the threshold");
    ServerOptions options = TestServer::DefaultOptions();
    options.small_request_flops = large ? flops - 1 : flops;
    TestServer server(options);
    Records records("NsaSelectedAttention");
    v1::NsaSelectedAttentionResponse out;
    ASSERT_TRUE(Call(server.stub(), &Stub::NsaSelectedAttention, forward, &out)
                    .status.ok());
    const std::vector<RequestRecord> seen = records.records();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_TRUE(seen[0].scheduled);
    EXPECT_EQ(seen[0].large, large);
  }
}

}  // namespace
}  // namespace attnserve::server::testing
