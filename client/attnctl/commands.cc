#include "attnctl/commands.h"

#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
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
  if (response.ok())
    timings->push_back(CallTiming{response->stats(), round_trip});
  return response;
}

void PrintWorkload(absl::string_view op, const Workload& w, std::ostream& out) {
  out << absl::StrFormat(
      "op: %s layout=%s dtype=%s b=%d n=%d kv_heads=%d sq=%d skv=%d d=%d "
      "scale=%.9g causal_mask=%s\n",
      op, w.layout, DataTypeName(w.dtype), w.batch, w.heads, w.kv_heads, w.sq,
      w.skv, w.head_dim, w.scale, w.causal_mask ? "true" : "false");
}

int Fail(const absl::Status& status, std::ostream& err) {
  PrintError(status, err);
  return kExitFailure;
}

}  // namespace

int RunHealth(const Client& client, const CommandOptions& options,
              std::ostream& out, std::ostream& err) {
  absl::StatusOr<ServingStatus> status =
      client.Health(options.health_service, options.timeout);
  if (!status.ok()) return Fail(status.status(), err);
  out << ServingStatusName(*status) << "\n";
  return *status == ServingStatus::kServing ? kExitOk : kExitFailure;
}

int RunInfo(const Client& client, const CommandOptions& options,
            std::ostream& out, std::ostream& err) {
  absl::StatusOr<v1::GetServerInfoResponse> info =
      client.GetServerInfo(options.timeout);
  if (!info.ok()) return Fail(info.status(), err);
  PrintServerInfo(*info, out);
  return kExitOk;
}

int RunForward(const Client& client, const Workload& workload,
               const CommandOptions& options, std::ostream& out,
               std::ostream& err) {
  absl::StatusOr<v1::FlashAttentionScoreRequest> request =
      MakeForwardRequest(workload);
  if (!request.ok()) return Fail(request.status(), err);
  PrintWorkload("FlashAttentionScore", workload, out);
  std::vector<CallTiming> timings;
  absl::StatusOr<v1::FlashAttentionScoreResponse> response;
  for (int i = 0; i < options.repeat; ++i) {
    response = Timed(
        [&] { return client.FlashAttentionScore(*request, options.timeout); },
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

int RunBackward(const Client& client, const Workload& workload,
                const CommandOptions& options, std::ostream& out,
                std::ostream& err) {
  absl::StatusOr<v1::FlashAttentionScoreRequest> forward =
      MakeForwardRequest(workload);
  if (!forward.ok()) return Fail(forward.status(), err);
  PrintWorkload("FlashAttentionScoreGrad", workload, out);
  std::vector<CallTiming> forward_timing;
  absl::StatusOr<v1::FlashAttentionScoreResponse> result = Timed(
      [&] { return client.FlashAttentionScore(*forward, options.timeout); },
      &forward_timing);
  if (!result.ok()) return Fail(result.status(), err);
  out << "forward: " << TimingFields(forward_timing.back()) << "\n";
  absl::StatusOr<v1::FlashAttentionScoreGradRequest> request =
      MakeGradRequest(workload, *std::move(forward), *std::move(result));
  if (!request.ok()) return Fail(request.status(), err);
  std::vector<CallTiming> timings;
  absl::StatusOr<v1::FlashAttentionScoreGradResponse> response;
  for (int i = 0; i < options.repeat; ++i) {
    response = Timed(
        [&] {
          return client.FlashAttentionScoreGrad(*request, options.timeout);
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
