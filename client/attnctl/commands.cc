#include "attnctl/commands.h"

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "attnctl/attention_requests.h"
#include "attnctl/nsa_requests.h"
#include "attnctl/report.h"
#include "attnctl/resident.h"
#include "attnserve/client/resident.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/wire/tensor_fields.h"

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

// Calls f(handle) for every output a response returned by handle only.
template <typename Response>
void ForEachOutputHandle(const Response& response,
                         const std::function<void(const std::string&)>& f) {
  wire::ForEachTensorField(
      response,
      [&](const google::protobuf::FieldDescriptor&, const v1::Tensor& tensor) {
        if (!tensor.handle().empty()) f(tensor.handle());
      });
}

// Calls `call(request, response)` and records the round trip and the
// response's stats.
template <typename Call, typename Request, typename Response>
absl::Status Timed(Call call, const Request& request, Response* response,
                   std::vector<CallTiming>* timings) {
  const absl::Time start = absl::Now();
  const absl::Status status = call(request, response);
  const absl::Duration round_trip = absl::Now() - start;
  if (status.ok()) {
    timings->push_back(CallTiming{response->stats(), round_trip});
  }
  return status;
}

// The call of `method` with a request, filling a response: plain (into the
// memory the response holds, Client::Compute), or, in resident mode, with
// the data of the session's handles resent on NOT_FOUND.
template <typename Request, typename Response>
auto CallOf(const Client& client,
            absl::StatusOr<Response> (Client::*method)(
                const Request&, std::optional<absl::Duration>) const,
            const CommandOptions& options, const ResidentSession* session) {
  return [&client, method, &options, session](
             const Request& request, Response* response) -> absl::Status {
    if (session == nullptr) {
      return client.Compute(request, response, options.timeout);
    }
    absl::StatusOr<Response> result = CallResendingOnNotFound(
        client, method, request, session->data(), options.timeout);
    if (!result.ok()) return result.status();
    *response = *std::move(result);
    return absl::OkStatus();
  };
}

// Calls `call` `repeat` times with `request`, printing a line per run,
// then the outputs, the summary and the request's size. The exit code.
// Every run receives into the same response object, so that from the
// second run on its tensors arrive in memory already in use. With
// --outputs_by_handle only the last call's outputs stay on the server:
// `forget(response)` frees an earlier call's.
template <typename Response, typename Request, typename Call, typename Forget>
int RunTimed(Call call, const Request& request, const CommandOptions& options,
             Forget forget, std::ostream& out, std::ostream& err) {
  std::vector<CallTiming> timings;
  Response response;
  for (int i = 0; i < options.repeat; ++i) {
    if (i > 0) forget(response);
    const absl::Status status = Timed(call, request, &response, &timings);
    if (!status.ok()) return Fail(status, err);
    out << RunLine(i + 1, options.repeat, timings.back()) << "\n";
  }
  PrintOutputs(response, out);
  PrintSummary(timings, out);
  out << "request_bytes: " << request.ByteSizeLong() << "\n"
      << "response_bytes: " << response.ByteSizeLong() << "\n";
  return kExitOk;
}

// Frees the outputs a response left on the server (--outputs_by_handle).
template <typename Response>
void ForgetOutputs(const Client& client, const CommandOptions& options,
                   const Response& response) {
  if (!options.outputs_by_handle) return;
  ForEachOutputHandle(response, [&](const std::string& handle) {
    client.DeleteTensor(handle, options.timeout).IgnoreError();
  });
}

template <typename F>
int Forward(const Client& client, const Workload& w,
            const CommandOptions& options, std::ostream& out,
            std::ostream& err) {
  auto request = F::kMakeForward(w);
  if (!request.ok()) return Fail(request.status(), err);
  out << "op: " << RpcName<decltype(BuiltBy(F::kMakeForward))>() << " "
      << F::kDescribe(w) << "\n";
  std::unique_ptr<ResidentSession> session;
  if (options.resident) {
    session =
        std::make_unique<ResidentSession>(client, options.put, options.timeout);
    absl::Status uploaded = session->Upload(&*request, out);
    if (!uploaded.ok()) return Fail(uploaded, err);
  }
  if (options.outputs_by_handle) {
    request->mutable_retention()->set_outputs_by_handle(true);
    if (options.put.ttl_seconds.has_value()) {
      request->mutable_retention()->set_ttl_seconds(*options.put.ttl_seconds);
    }
  }
  using Response = typename decltype((client.*F::kForward)(
      *request, options.timeout))::value_type;
  return RunTimed<Response>(
      CallOf(client, F::kForward, options, session.get()), *request, options,
      [&](const Response& r) { ForgetOutputs(client, options, r); }, out, err);
}

template <typename F>
int Backward(const Client& client, const Workload& w,
             const CommandOptions& options, std::ostream& out,
             std::ostream& err) {
  auto forward = F::kMakeForward(w);
  if (!forward.ok()) return Fail(forward.status(), err);
  out << "op: " << RpcName<decltype(BuiltBy(F::kMakeGrad))>() << " "
      << F::kDescribe(w) << "\n";
  std::unique_ptr<ResidentSession> session;
  if (options.resident) {
    session =
        std::make_unique<ResidentSession>(client, options.put, options.timeout);
    absl::Status uploaded = session->Upload(&*forward, out);
    if (!uploaded.ok()) return Fail(uploaded, err);
    forward->mutable_retention()->set_keep(true);
    if (options.put.ttl_seconds.has_value()) {
      forward->mutable_retention()->set_ttl_seconds(*options.put.ttl_seconds);
    }
  }
  std::vector<CallTiming> forward_timing;
  using ForwardResponse = typename decltype((client.*F::kForward)(
      *forward, options.timeout))::value_type;
  ForwardResponse result;
  const absl::Status called =
      Timed(CallOf(client, F::kForward, options, session.get()), *forward,
            &result, &forward_timing);
  if (!called.ok()) return Fail(called, err);
  out << "forward: " << TimingFields(forward_timing.back()) << "\n";
  // The grad names the forward's kept outputs by handle.
  if (session != nullptr) session->AdoptOutputs(result.handles(), &result);
  forward->clear_retention();
  auto request = F::kMakeGrad(w, *std::move(forward), std::move(result));
  if (!request.ok()) return Fail(request.status(), err);
  using Response = typename decltype((client.*F::kGrad)(
      *request, options.timeout))::value_type;
  return RunTimed<Response>(
      CallOf(client, F::kGrad, options, session.get()), *request, options,
      [](const Response&) {}, out, err);
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
