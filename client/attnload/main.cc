// attnload: a load generator for attnserve. N callers repeat one
// FlashAttentionScore request (random inputs, fixed seed) for a fixed time
// and the tool prints the outcome as `key: value` lines (see
// load_generator.h): counts by status, mismatching answers, throughput and
// latency percentiles of the successful calls.
//
//   attnload --target=127.0.0.1:50051 --concurrency=16 --duration=10s -s 128
//
// Exit status: 0 when every call succeeded or failed with an allowed code
// (--allowed_codes, default RESOURCE_EXHAUSTED) and every answer matched;
// 1 otherwise; 2 for bad arguments.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "attnctl/attention_requests.h"
#include "attnctl/connection_flags.h"
#include "attnctl/workload.h"
#include "attnload/load_generator.h"
#include "attnserve/client/client.h"
#include "attnserve/client/tensor_helpers.h"

ABSL_FLAG(int, concurrency, 8, "Callers, each with one call in flight.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "How long to keep starting calls.");
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

namespace attnserve::attnload {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int UsageError(absl::string_view message) {
  std::cerr << "attnload: " << message << "\n";
  return kExitUsage;
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
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.refused_backoff = absl::GetFlag(FLAGS_refused_backoff);
  if (options.concurrency < 1) return UsageError("--concurrency must be >= 1");
  const LoadReport report =
      RunLoad(options, [&](absl::Duration timeout) -> absl::StatusOr<uint64_t> {
        absl::StatusOr<v1::FlashAttentionScoreResponse> response =
            client->FlashAttentionScore(*request, timeout);
        if (!response.ok()) return response.status();
        return Fingerprint(*response);
      });
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
  return attnserve::attnload::Main(argc, argv);
}
