// attnload: a load generator for attnserve. N callers repeat one
// FlashAttentionScore request (random inputs, fixed seed) for a fixed time
// and the tool prints the outcome as `key: value` lines (see
// load_generator.h): counts by status, mismatching answers, throughput and
// latency percentiles of the successful calls.
//
//   attnload --target=127.0.0.1:50051 --concurrency=16 --duration=10s -s 128
//
// With --mix the callers pick each call at random among several requests
// (operators, shapes, dtypes; mix.h has the syntax), e.g.
//
//   attnload --target=... --mix=fwd:bf16:s512,bwd:fp16:TND:b3:kv2,nsa-fwd
//
// Backward cases run their forward once before the load to get its
// outputs. Every answer of a mixed load is also checked to be finite (a
// non-finite output counts as DATA_LOSS).
//
// Exit status: 0 when every call succeeded or failed with an allowed code
// (--allowed_codes, default RESOURCE_EXHAUSTED) and every answer matched;
// 1 otherwise; 2 for bad arguments.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attnctl/attention_requests.h"
#include "attnctl/connection_flags.h"
#include "attnctl/nsa_requests.h"
#include "attnctl/workload.h"
#include "attnload/load_generator.h"
#include "attnload/mix.h"
#include "attnserve/client/client.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/wire/process_heap.h"
#include "attnserve/wire/tensor_fields.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

ABSL_FLAG(int, concurrency, 8, "Callers, each with one call in flight.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "How long to keep starting calls.");
ABSL_FLAG(int64_t, calls, 0,
          "Calls to make in all, at most (0: as many as --duration allows).");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30), "Deadline of each call.");
ABSL_FLAG(absl::Duration, refused_backoff, absl::Milliseconds(5),
          "Pause of a caller after RESOURCE_EXHAUSTED before its next call.");
ABSL_FLAG(std::vector<std::string>, allowed_codes, {"RESOURCE_EXHAUSTED"},
          "Status codes that do not make the run fail (comma-separated).");
ABSL_FLAG(std::string, layout, "BNSD", "Input layout: BSH, SBH, BSND or BNSD.");
ABSL_FLAG(std::string, dtype, "fp32", "Input dtype: fp32, fp16 or bf16.");
ABSL_FLAG(int64_t, b, 1, "Batch size.");
ABSL_FLAG(int64_t, n, 8, "Query heads (and key/value heads).");
ABSL_FLAG(int64_t, s, 128, "Sequence length of query and key/value.");
ABSL_FLAG(int64_t, d, 128, "Head dimension.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random inputs.");
ABSL_FLAG(std::vector<std::string>, mix, {},
          "Mixed load: comma-separated cases OP[:TOKEN]... picked at random "
          "for each call, e.g. fwd:bf16:s512,bwd:TND:b3:kv2,nsa-fwd:n16:kv1 "
          "(OP fwd, bwd, nsa-fwd, nsa-bwd; tokens fp32/fp16/bf16, "
          "BSH/SBH/BSND/BNSD/TND, b<N> n<N> kv<N> s<N> sq<N> skv<N> d<N> "
          "dv<N>, causal, mode<N>, bs<N> bc<N>, seed<N>; the other flags are "
          "the defaults).");
ABSL_FLAG(uint64_t, mix_seed, 1, "Seed of the callers' choice of case.");
ABSL_FLAG(absl::Duration, pause, absl::ZeroDuration(),
          "Pause of a caller after every answer (think time).");

namespace attnserve::attnload {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int UsageError(absl::string_view message) {
  std::cerr << "attnload: " << message << "\n";
  return kExitUsage;
}

// OK when every float tensor the response carries is finite (unset ones
// are skipped); DATA_LOSS naming the first that is not.
absl::Status CheckFinite(const google::protobuf::Message& response) {
  absl::Status status;
  wire::ForEachTensorField(
      response, [&](const google::protobuf::FieldDescriptor& field,
                    const v1::Tensor& tensor) {
        if (!status.ok()) return;
        absl::StatusOr<std::vector<float>> values = TensorToFloats(tensor);
        if (!values.ok()) {
          status = values.status();
          return;
        }
        for (float v : *values) {
          if (!std::isfinite(v)) {
            status =
                absl::DataLossError(absl::StrCat("non-finite ", field.name()));
            return;
          }
        }
      });
  return status;
}

// `method` called with `request` until it is not refused (the server may be
// busy with other clients) or `timeout` has passed.
template <typename Request, typename Method>
auto CallUntilAdmitted(const Client& client, Method method,
                       const Request& request, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto response = (client.*method)(request, timeout);
    if (!absl::IsResourceExhausted(response.status()) ||
        absl::Now() >= deadline) {
      return response;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// A call that sends `request` with `method`, fingerprints the answer and
// checks that it is finite. The request is shared by all callers.
template <typename Request, typename Method>
CallFn RepeatCall(const Client& client, Method method, Request request) {
  auto shared = std::make_shared<const Request>(std::move(request));
  return [&client, method,
          shared](absl::Duration timeout) -> absl::StatusOr<uint64_t> {
    auto response = (client.*method)(*shared, timeout);
    if (!response.ok()) return response.status();
    if (absl::Status finite = CheckFinite(*response); !finite.ok()) {
      return finite;
    }
    return Fingerprint(*response);
  };
}

// The call of case `c`; backward cases run their forward first.
absl::StatusOr<CallFn> MakeCaseCall(const Client& client, const MixCase& c,
                                    absl::Duration timeout) {
  const attnctl::Workload& w = c.workload;
  const auto failed = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(c.spec, ": ", status.message()));
  };
  switch (c.op) {
    case MixOp::kForward:
    case MixOp::kBackward: {
      absl::StatusOr<v1::FlashAttentionScoreRequest> forward =
          attnctl::MakeForwardRequest(w);
      if (!forward.ok()) return failed(forward.status());
      if (c.op == MixOp::kForward) {
        return RepeatCall(client, &Client::FlashAttentionScore,
                          *std::move(forward));
      }
      absl::StatusOr<v1::FlashAttentionScoreResponse> result =
          CallUntilAdmitted(client, &Client::FlashAttentionScore, *forward,
                            timeout);
      if (!result.ok()) return failed(result.status());
      absl::StatusOr<v1::FlashAttentionScoreGradRequest> grad =
          attnctl::MakeGradRequest(w, *std::move(forward), *std::move(result));
      if (!grad.ok()) return failed(grad.status());
      return RepeatCall(client, &Client::FlashAttentionScoreGrad,
                        *std::move(grad));
    }
    case MixOp::kNsaForward:
    case MixOp::kNsaBackward: {
      absl::StatusOr<v1::NsaSelectedAttentionRequest> forward =
          attnctl::MakeNsaForwardRequest(w);
      if (!forward.ok()) return failed(forward.status());
      if (c.op == MixOp::kNsaForward) {
        return RepeatCall(client, &Client::NsaSelectedAttention,
                          *std::move(forward));
      }
      absl::StatusOr<v1::NsaSelectedAttentionResponse> result =
          CallUntilAdmitted(client, &Client::NsaSelectedAttention, *forward,
                            timeout);
      if (!result.ok()) return failed(result.status());
      absl::StatusOr<v1::NsaSelectedAttentionGradRequest> grad =
          attnctl::MakeNsaGradRequest(w, *std::move(forward),
                                      *std::move(result));
      if (!grad.ok()) return failed(grad.status());
      return RepeatCall(client, &Client::NsaSelectedAttentionGrad,
                        *std::move(grad));
    }
  }
  return absl::InternalError("unknown operator");
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "attnload --target=host:port --concurrency=N --duration=10s [-s 128]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return UsageError(absl::StrCat("unexpected argument ", positional[1]));
  }
  std::vector<absl::StatusCode> allowed = {absl::StatusCode::kOk};
  for (const std::string& name : absl::GetFlag(FLAGS_allowed_codes)) {
    bool found = false;
    for (int c = 0; c <= 16; ++c) {
      const auto code = static_cast<absl::StatusCode>(c);
      if (absl::StatusCodeToString(code) == absl::AsciiStrToUpper(name)) {
        allowed.push_back(code);
        found = true;
      }
    }
    if (!found) return UsageError(absl::StrCat("unknown status code ", name));
  }

  attnctl::Workload w;
  w.layout = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_layout));
  absl::StatusOr<v1::DataType> dtype =
      ParseDataType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return UsageError(dtype.status().message());
  w.dtype = *dtype;
  w.batch = absl::GetFlag(FLAGS_b);
  w.heads = w.kv_heads = w.head_num = absl::GetFlag(FLAGS_n);
  w.sq = w.skv = absl::GetFlag(FLAGS_s);
  w.head_dim = absl::GetFlag(FLAGS_d);
  w.scale =
      w.head_dim > 0 ? 1.0 / std::sqrt(static_cast<double>(w.head_dim)) : 1.0;
  w.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status valid = attnctl::ValidateAttentionWorkload(w); !valid.ok()) {
    return UsageError(valid.message());
  }
  std::vector<MixCase> mix;
  for (const std::string& spec : absl::GetFlag(FLAGS_mix)) {
    absl::StatusOr<MixCase> c = ParseMixCase(spec, w);
    if (!c.ok()) return UsageError(c.status().message());
    mix.push_back(*std::move(c));
  }
  absl::StatusOr<v1::FlashAttentionScoreRequest> request =
      attnctl::MakeForwardRequest(w);
  if (!request.ok()) return UsageError(request.status().message());

  absl::StatusOr<ClientOptions> client_options =
      attnctl::ClientOptionsFromFlags();
  if (!client_options.ok()) {
    return UsageError(client_options.status().message());
  }
  absl::StatusOr<Client> client =
      Client::Connect(attnctl::TargetFromFlags(), *client_options);
  if (!client.ok()) return UsageError(client.status().message());

  LoadOptions options;
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.max_calls = absl::GetFlag(FLAGS_calls);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.refused_backoff = absl::GetFlag(FLAGS_refused_backoff);
  options.pause = absl::GetFlag(FLAGS_pause);
  options.mix_seed = absl::GetFlag(FLAGS_mix_seed);
  if (options.concurrency < 1) return UsageError("--concurrency must be >= 1");
  if (options.max_calls < 0) return UsageError("--calls must be >= 0");
  LoadReport report;
  if (mix.empty()) {
    report = RunLoad(
        options, [&](absl::Duration timeout) -> absl::StatusOr<uint64_t> {
          absl::StatusOr<v1::FlashAttentionScoreResponse> response =
              client->FlashAttentionScore(*request, timeout);
          if (!response.ok()) return response.status();
          return Fingerprint(*response);
        });
  } else {
    std::vector<CallFn> calls;
    std::vector<std::string> names;
    for (const MixCase& c : mix) {
      absl::StatusOr<CallFn> call = MakeCaseCall(*client, c, options.timeout);
      if (!call.ok()) {
        std::cerr << "attnload: " << call.status() << "\n";
        return kExitFailure;
      }
      calls.push_back(*std::move(call));
      names.push_back(c.spec);
    }
    report = RunMixedLoad(
        options, names,
        [&](size_t i, absl::Duration timeout) { return calls[i](timeout); });
  }
  std::cout << FormatReport(report);

  bool failed = report.mismatches > 0 || report.ok() == 0;
  for (const auto& [code, n] : report.by_code) {
    if (std::find(allowed.begin(), allowed.end(), code) == allowed.end()) {
      failed = true;
    }
  }
  return failed ? kExitFailure : kExitOk;
}

}  // namespace
}  // namespace attnserve::attnload

int main(int argc, char** argv) {
  // A heap backed by huge pages (this may start the program again), and
  // each call's received messages land in memory the last one freed.
  attnserve::wire::UseHugePagesForHeap(argv);
  attnserve::wire::KeepFreedHeap();
  return attnserve::attnload::Main(argc, argv);
}
