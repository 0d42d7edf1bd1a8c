#include "attnctl/commands.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "attnctl/attention_requests.h"
#include "attnctl/nsa_requests.h"
#include "attnctl/report.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {
namespace {

std::string DescribeAttention(const Workload& w) {
  return absl::StrFormat(
      "layout=%s dtype=%s b=%d n=%d kv_heads=%d sq=%d skv=%d d=%d scale=%.9g "
      "causal_mask=%s",
      w.layout, DataTypeName(w.dtype), w.batch, w.heads, w.kv_heads, w.sq,
      w.skv, w.head_dim, w.scale, w.causal_mask ? "true" : "false");
}

std::string DescribeNsa(const Workload& w) {
  return absl::StrFormat(
      "layout=TND dtype=%s b=%d n=%d kv_heads=%d sq=%d skv=%d d=%d dv=%d "
      "block_size=%d block_count=%d sparse_mode=%d scale=%.9g",
      DataTypeName(w.dtype), w.batch, w.heads, w.kv_heads, w.sq, w.skv,
      w.head_dim, w.value_dim, w.block_size, w.block_count, w.sparse_mode,
      w.scale);
}

// What the commands need of a family: its two Client methods, its request
// builders and how to describe a workload. The command flow itself is
// written once, below.
template <auto kForwardV, auto kGradV, auto kMakeForwardV, auto kMakeGradV,
          auto kDescribeV>
struct FamilyOf {
  static constexpr auto kForward = kForwardV;
  static constexpr auto kGrad = kGradV;
  static constexpr auto kMakeForward = kMakeForwardV;
  static constexpr auto kMakeGrad = kMakeGradV;
  static constexpr auto kDescribe = kDescribeV;
};
using FlashAttention =
    FamilyOf<&Client::FlashAttentionScore, &Client::FlashAttentionScoreGrad,
             &MakeForwardRequest, &MakeGradRequest, &DescribeAttention>;
using Nsa =
    FamilyOf<&Client::NsaSelectedAttention, &Client::NsaSelectedAttentionGrad,
             &MakeNsaForwardRequest, &MakeNsaGradRequest, &DescribeNsa>;

// The RPC a request message is for: "NsaSelectedAttention" for
// NsaSelectedAttentionRequest.
template <typename Request>
std::string RpcName() {
  const std::string& message = Request::descriptor()->name();
  return message.substr(0, message.size() - std::strlen("Request"));
}

// The request a builder makes (unevaluated: for decltype only).
template <typename Request, typename... Inputs>
Request BuiltBy(absl::StatusOr<Request> (*builder)(Inputs...));

int Fail(const absl::Status& status, std::ostream& err) {
  PrintError(status, err);
  return kExitFailure;
}

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

// Calls `method` `repeat` times with `request`, printing a line per run,
// then the outputs and the summary. The exit code.
template <typename Request, typename Method>
int RunTimed(const Client& client, Method method, const Request& request,
             const CommandOptions& options, std::ostream& out,
             std::ostream& err) {
  std::vector<CallTiming> timings;
  decltype((client.*method)(request, options.timeout)) response;
  for (int i = 0; i < options.repeat; ++i) {
    response = Timed([&] { return (client.*method)(request, options.timeout); },
                     &timings);
    if (!response.ok()) return Fail(response.status(), err);
    out << RunLine(i + 1, options.repeat, timings.back()) << "\n";
  }
  PrintOutputs(*response, out);
  PrintSummary(timings, out);
  return kExitOk;
}

template <typename F>
int Forward(const Client& client, const Workload& w,
            const CommandOptions& options, std::ostream& out,
            std::ostream& err) {
  auto request = F::kMakeForward(w);
  if (!request.ok()) return Fail(request.status(), err);
  out << "op: " << RpcName<decltype(BuiltBy(F::kMakeForward))>() << " "
      << F::kDescribe(w) << "\n";
  return RunTimed(client, F::kForward, *request, options, out, err);
}

template <typename F>
int Backward(const Client& client, const Workload& w,
             const CommandOptions& options, std::ostream& out,
             std::ostream& err) {
  auto forward = F::kMakeForward(w);
  if (!forward.ok()) return Fail(forward.status(), err);
  out << "op: " << RpcName<decltype(BuiltBy(F::kMakeGrad))>() << " "
      << F::kDescribe(w) << "\n";
  std::vector<CallTiming> forward_timing;
  auto result =
      Timed([&] { return (client.*F::kForward)(*forward, options.timeout); },
            &forward_timing);
  if (!result.ok()) return Fail(result.status(), err);
  out << "forward: " << TimingFields(forward_timing.back()) << "\n";
  auto request = F::kMakeGrad(w, *std::move(forward), *std::move(result));
  if (!request.ok()) return Fail(request.status(), err);
  return RunTimed(client, F::kGrad, *request, options, out, err);
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

absl::Status ValidateWorkload(Family family, const Workload& workload) {
  return family == Family::kNsa ? ValidateNsaWorkload(workload)
                                : ValidateAttentionWorkload(workload);
}

int RunForward(const Client& client, Family family, const Workload& workload,
               const CommandOptions& options, std::ostream& out,
               std::ostream& err) {
  return family == Family::kNsa
             ? Forward<Nsa>(client, workload, options, out, err)
             : Forward<FlashAttention>(client, workload, options, out, err);
}

int RunBackward(const Client& client, Family family, const Workload& workload,
                const CommandOptions& options, std::ostream& out,
                std::ostream& err) {
  return family == Family::kNsa
             ? Backward<Nsa>(client, workload, options, out, err)
             : Backward<FlashAttention>(client, workload, options, out, err);
}

}  // namespace attnserve::attnctl
