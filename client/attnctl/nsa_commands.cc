#include "attnctl/nsa_commands.h"

#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "attnctl/report.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {
namespace {

// Calls `call()` and records the round trip and the response's stats.
template <typename Call>
auto Timed(Call call, std::vector<CallTiming>* timings) {
  const absl::Time start = absl::Now();
  auto response = call();
  const absl::Duration round_trip = absl::Now() - start;
  if (response.ok()) {
    timings->push_back(CallTiming{response->stats(), round_trip});
  }
  return response;
}

void PrintWorkload(absl::string_view op, const NsaWorkload& w,
                   std::ostream& out) {
  out << absl::StrFormat(
      "op: %s layout=TND dtype=%s b=%d n=%d kv_heads=%d sq=%d skv=%d d=%d "
      "dv=%d block_size=%d block_count=%d sparse_mode=%d scale=%.9g\n",
      op, DataTypeName(w.dtype), w.batch, w.heads, w.kv_heads, w.sq, w.skv,
      w.head_dim, w.value_dim, w.block_size, w.block_count, w.sparse_mode,
      w.scale);
}

int Fail(const absl::Status& status, std::ostream& err) {
  PrintError(status, err);
  return kExitFailure;
}

}  // namespace

int RunNsaForward(const Client& client, const NsaWorkload& workload,
                  const CommandOptions& options, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<v1::NsaSelectedAttentionRequest> request =
      MakeNsaForwardRequest(workload);
  if (!request.ok()) return Fail(request.status(), err);
  PrintWorkload("NsaSelectedAttention", workload, out);
  std::vector<CallTiming> timings;
  absl::StatusOr<v1::NsaSelectedAttentionResponse> response;
  for (int i = 0; i < options.repeat; ++i) {
    response = Timed(
        [&] { return client.NsaSelectedAttention(*request, options.timeout); },
        &timings);
    if (!response.ok()) return Fail(response.status(), err);
    out << RunLine(i + 1, options.repeat, timings.back()) << "\n";
  }
  out << TensorLine("attention_out", response->attention_out()) << "\n"
      << TensorLine("softmax_max", response->softmax_max()) << "\n"
      << TensorLine("softmax_sum", response->softmax_sum()) << "\n";
  PrintSummary(timings, out);
  return kExitOk;
}

int RunNsaBackward(const Client& client, const NsaWorkload& workload,
                   const CommandOptions& options, std::ostream& out,
                   std::ostream& err) {
  absl::StatusOr<v1::NsaSelectedAttentionRequest> forward =
      MakeNsaForwardRequest(workload);
  if (!forward.ok()) return Fail(forward.status(), err);
  PrintWorkload("NsaSelectedAttentionGrad", workload, out);
  std::vector<CallTiming> forward_timing;
  absl::StatusOr<v1::NsaSelectedAttentionResponse> result = Timed(
      [&] { return client.NsaSelectedAttention(*forward, options.timeout); },
      &forward_timing);
  if (!result.ok()) return Fail(result.status(), err);
  out << "forward: " << TimingFields(forward_timing.back()) << "\n";
  absl::StatusOr<v1::NsaSelectedAttentionGradRequest> request =
      MakeNsaGradRequest(workload, *std::move(forward), *std::move(result));
  if (!request.ok()) return Fail(request.status(), err);
  std::vector<CallTiming> timings;
  absl::StatusOr<v1::NsaSelectedAttentionGradResponse> response;
  for (int i = 0; i < options.repeat; ++i) {
    response = Timed(
        [&] {
          return client.NsaSelectedAttentionGrad(*request, options.timeout);
        },
        &timings);
    if (!response.ok()) return Fail(response.status(), err);
    out << RunLine(i + 1, options.repeat, timings.back()) << "\n";
  }
  out << TensorLine("dq", response->dq()) << "\n"
      << TensorLine("dk", response->dk()) << "\n"
      << TensorLine("dv", response->dv()) << "\n";
  PrintSummary(timings, out);
  return kExitOk;
}

}  // namespace attnserve::attnctl
