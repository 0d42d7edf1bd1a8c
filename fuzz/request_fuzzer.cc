// Compute requests as the server receives them, through every step before
// and after the scheduler (rpc_pipeline.h), for every operator; and
// PutTensor streams as the service takes them.
//
// Input: one selector byte, one chunking byte, then the request's bytes.
//   selector % 5: 0 FlashAttentionScore, 1 FlashAttentionScoreGrad,
//                 2 NsaSelectedAttention, 3 NsaSelectedAttentionGrad, all
//                 decoded by the byte-level codec (DecodeRequest, the
//                 service's path); 4 GetWorkspaceSizeRequest, parsed by
//                 protobuf (ParseRequest, the service's path for it), whose
//                 operator request is then handled like the others with the
//                 tensors' bytes inside the message.
//   selector & 0x10: plan for 2 threads instead of 1.
//   selector & 0x20: instead, the bytes are a PutTensor stream (below).
//   chunking: 0 = the bytes arrive as one slice, n = slices of n bytes (the
//   decoder must not care where gRPC's slices end).
//
// Each request is decoded, described for the log (RecordOf), held to the
// size limits (CheckTensorLimits), given its resident tensors (a tensor
// store holding four tensors, named in requests by the handles "h0" to
// "h3"), converted (ToArgs) and prepared (PreparedCall::Prepare: every
// validation and the plan), its response size and retention reserved. A
// prepared call of at most kMaxRunFlops runs on an engine; its outputs must
// match the planned specs, and be finite when the inputs are well
// conditioned (below), and the response is encoded. Whatever the outcome,
// the request's log line must stay one line of printable ASCII.
//
// A PutTensor stream is a sequence of messages, each after its length in
// two bytes (little-endian; cut at the input's end), taken by a
// TensorUpload (tensor_upload.h, the service's path) until one is refused,
// then stored. Every message taken must be one protobuf parses (unless
// protobuf refuses what the codec need not check, e.g. a handle that is not
// UTF-8), and a stored tensor must hold exactly the chunks protobuf's parse
// finds, in order, and as many bytes as its dtype and shape declare.
//
// Well conditioned: every floating input within [-1, 1] (so no product can
// overflow), |scale_value| <= 16, dropout keeping at least half, and for
// the grads the softmax statistics recomputed, not sent (sent statistics
// that disagree with the scores legitimately give inf). Then every output
// is finite, except FLOAT16 gradients, which may overflow to inf as the
// narrowing documents, but never become NaN. NsaSelectedAttentionGrad
// always takes sent statistics: its outputs are not checked.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/dtype.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/prepared_call.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/core/tensor.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/request_payloads.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/grpcpp.h"
#include "server/call_tensors.h"
#include "server/memory_budget.h"
#include "server/message_bytes.h"
#include "server/operator_rpcs.h"
#include "server/proto_convert.h"
#include "server/request_limits.h"
#include "server/request_log.h"
#include "server/rpc_pipeline.h"
#include "server/tensor_store.h"
#include "server/tensor_upload.h"

namespace attnserve::fuzz {
namespace {

using server::CallTensors;

// The server's default --max_tensor_elements.
constexpr int64_t kMaxTensorElements = int64_t{1} << 28;
// The largest call that runs (a few milliseconds under the sanitizers).
constexpr double kMaxRunFlops = 2e6;
constexpr uint64_t kMaxRunBytes = uint64_t{16} << 20;
constexpr char kOwner[] = "fuzz";

core::Engine& TheEngine() {
  static core::Engine* engine = new core::Engine(
      core::EngineOptions{/*workspace_budget_bytes=*/uint64_t{256} << 20,
                          /*intra_op_threads=*/2, /*bf16_tile_products=*/true});
  return *engine;
}

// The tensors the store holds for every input, by alias.
struct Resident {
  const char* alias;
  core::DType dtype;
  std::vector<int64_t> shape;
};
const std::vector<Resident>& ResidentTensors() {
  static const auto* tensors = new std::vector<Resident>{
      {"h0", core::DType::kFloat32, {1, 2, 8, 16}},
      {"h1", core::DType::kFloat16, {1, 2, 8, 16}},
      {"h2", core::DType::kBFloat16, {1, 8, 32}},
      {"h3", core::DType::kFloat32, {1, 2, 8, 8}},
  };
  return *tensors;
}

// Values in [-1, 1) (positive for the statistics-shaped h3).
core::Buffer ResidentBytes(const Resident& r) {
  int64_t n = 1;
  for (int64_t d : r.shape) n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = static_cast<float>((i * 37) % 64) / 32.0f - 1.0f;
    values[i] = r.alias[1] == '3' ? 1.0f + v * v : v;
  }
  core::Buffer bytes(values.size() * core::ItemSize(r.dtype));
  core::FromFloat(r.dtype, values.data(), bytes.data(), values.size());
  return bytes;
}

// Resolves the aliases "h0".."h3" to the store's handles (which are random)
// and everything else as sent, through the call's CallTensors.
class AliasResolver final : public server::HandleResolver {
 public:
  AliasResolver(CallTensors* tensors,
                std::vector<std::pair<std::string, std::string>> aliases)
      : tensors_(tensors), aliases_(std::move(aliases)) {}
  absl::StatusOr<core::TensorView> Resolve(const std::string& field,
                                           const std::string& handle) override {
    for (const auto& [alias, real] : aliases_) {
      if (handle == alias) return tensors_->Resolve(field, real);
    }
    return tensors_->Resolve(field, handle);
  }

 private:
  CallTensors* const tensors_;
  const std::vector<std::pair<std::string, std::string>> aliases_;
};

// One call's server-side state, in the order the pipeline makes it.
struct CallState {
  CallState() {
    server::TensorStoreOptions options;
    options.capacity_bytes = uint64_t{8} << 20;
    options.expiry_thread = false;
    store = std::make_unique<server::TensorStore>(options, &budget);
    for (const Resident& r : ResidentTensors()) {
      core::Buffer bytes = ResidentBytes(r);
      absl::StatusOr<server::MemoryReservation> memory =
          store->Reserve(bytes.size());
      FUZZ_CHECK(memory.ok(), memory.status().ToString());
      auto tensor = std::make_shared<server::ResidentTensor>(r.dtype, r.shape,
                                                             std::move(bytes));
      tensor->memory = std::move(*memory);
      aliases.emplace_back(
          r.alias, store->Insert(kOwner, std::move(tensor), absl::Minutes(1),
                                 server::TensorStore::kViaPut));
    }
  }

  server::MemoryBudget budget{uint64_t{64} << 20};
  std::unique_ptr<server::TensorStore> store;
  std::vector<std::pair<std::string, std::string>> aliases;
};

bool IsFloating(core::DType dtype) {
  return core::IsFloatingCompute(dtype) ||
         dtype == core::DType::kFloat8E4M3FN ||
         dtype == core::DType::kFloat8E5M2;
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// The elements of a floating tensor as fp32 (empty for other dtypes); a
// chunked view (read by the kernels where it was received) is joined first.
std::vector<float> Values(const core::TensorView& view) {
  if (!IsFloating(view.dtype)) return {};
  const size_t n = view.size_bytes / core::ItemSize(view.dtype);
  std::string joined;
  const void* bytes = view.data;
  if (view.chunks != nullptr) {
    joined.resize(view.chunks->size());
    view.chunks->CopyTo({0, joined.size()}, joined.data());
    bytes = joined.data();
  }
  std::vector<float> values(n);
  core::ToFloat(view.dtype, bytes, values.data(), n);
  return values;
}

bool WithinUnit(const core::TensorView& view) {
  for (float v : Values(view)) {
    if (!(std::fabs(v) <= 1.0f)) return false;
  }
  return true;
}

bool WithinUnit(const std::optional<core::TensorView>& view) {
  return !view.has_value() || WithinUnit(*view);
}

bool WellConditioned(const core::AttentionOptions& o) {
  const bool dropout = o.drop_mask.has_value() || o.keep_prob < 1.0;
  return WithinUnit(o.pse) && std::fabs(o.scale_value) <= 16 &&
         (!dropout || o.keep_prob >= 0.5);
}

bool WellConditioned(const core::ForwardArgs& a) {
  return WithinUnit(a.query) && WithinUnit(a.key) && WithinUnit(a.value) &&
         WellConditioned(a.options);
}

bool WellConditioned(const core::BackwardArgs& a) {
  return !a.softmax_max.has_value() && !a.softmax_sum.has_value() &&
         !a.attention_in.has_value() && WithinUnit(a.query) &&
         WithinUnit(a.key) && WithinUnit(a.value) && WithinUnit(a.dy) &&
         WellConditioned(a.options);
}

bool WellConditioned(const core::NsaForwardArgs& a) {
  return WithinUnit(a.query) && WithinUnit(a.key) && WithinUnit(a.value) &&
         std::fabs(a.options.scale_value) <= 16;
}

bool WellConditioned(const core::NsaBackwardArgs&) { return false; }

// `tensor` is what `spec` announced, and (when `finite`) holds no inf or
// NaN; a FLOAT16 gradient (`gradient`) may hold inf, never NaN.
void CheckOutput(const char* op, const core::OutputSpec& spec,
                 const core::HostTensor& tensor, bool finite, bool gradient) {
  FUZZ_CHECK(tensor.dtype == spec.dtype, op, " ", spec.name, ": dtype ",
             core::DTypeName(tensor.dtype), " planned ",
             core::DTypeName(spec.dtype));
  FUZZ_CHECK(tensor.shape == spec.shape, op, " ", spec.name,
             ": shape differs from the plan's");
  const int64_t n = Elements(tensor.shape);
  FUZZ_CHECK(n >= 0 && tensor.bytes.size() == static_cast<size_t>(n) *
                                                  core::ItemSize(tensor.dtype),
             op, " ", spec.name, ": ", tensor.bytes.size(), " bytes for ", n,
             " elements");
  if (!finite) return;
  const std::vector<float> values = Values(tensor.view());
  const bool inf_allowed = gradient && tensor.dtype == core::DType::kFloat16;
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    FUZZ_CHECK(std::isfinite(v) || (inf_allowed && std::isinf(v)), op, " ",
               spec.name, "[", i, "] = ", v, " from well-conditioned inputs");
  }
}

void CheckOutputs(const char* op, const std::vector<core::OutputSpec>& specs,
                  const core::ForwardResult& r, bool finite) {
  FUZZ_CHECK(specs.size() == 3, op, ": ", specs.size(), " outputs planned");
  CheckOutput(op, specs[0], r.attention_out, finite, false);
  CheckOutput(op, specs[1], r.softmax_max, finite, false);
  CheckOutput(op, specs[2], r.softmax_sum, finite, false);
}

void CheckOutputs(const char* op, const std::vector<core::OutputSpec>& specs,
                  const core::BackwardResult& r, bool finite) {
  FUZZ_CHECK(specs.size() == (r.dpse.has_value() ? 4u : 3u), op, ": ",
             specs.size(), " outputs planned");
  CheckOutput(op, specs[0], r.dq, finite, true);
  CheckOutput(op, specs[1], r.dk, finite, true);
  CheckOutput(op, specs[2], r.dv, finite, true);
  if (r.dpse.has_value()) CheckOutput(op, specs[3], *r.dpse, finite, true);
}

// Steps 0 to 5 of the pipeline for `request` (its tensors' bytes in
// `payloads` when it came through the byte-level path, else in the
// message), on one thread. Returns the call's outcome.
template <typename Rpc>
absl::Status Serve(const typename Rpc::Request& request,
                   wire::RequestPayloads* payloads, int threads) {
  using Call = typename Rpc::Call;
  ATTN_RETURN_IF_ERROR(server::CheckTensorLimits(request, kMaxTensorElements));
  CallState state;
  wire::OutgoingPayloads outgoing;
  CallTensors tensors(state.store.get(), kOwner, request.retention());
  tensors.SetPayloads(payloads, payloads != nullptr ? &outgoing : nullptr);
  ATTN_RETURN_IF_ERROR(tensors.CheckRetention());
  AliasResolver resolver(&tensors, state.aliases);
  ATTN_ASSIGN_OR_RETURN(typename Rpc::Args args,
                        Rpc::ToArgs(request, &resolver, payloads));
  core::Engine& engine = TheEngine();
  ATTN_ASSIGN_OR_RETURN(
      Call call, Call::Prepare(std::move(args), core::ThreadPolicy(threads),
                               engine.bf16_tile_products()));

  // What the plan announces must add up.
  uint64_t output_bytes = 0;
  for (const core::OutputSpec& spec : call.outputs()) {
    const int64_t n = Elements(spec.shape);
    uint64_t bytes = 0;
    if (n < 0 ||
        __builtin_mul_overflow(static_cast<uint64_t>(n),
                               core::ItemSize(spec.dtype), &bytes) ||
        __builtin_add_overflow(output_bytes, bytes, &output_bytes)) {
      output_bytes = UINT64_MAX;
      break;
    }
  }
  FUZZ_CHECK(output_bytes == call.output_bytes(), Rpc::kName, ": outputs of ",
             output_bytes, " bytes, output_bytes() ", call.output_bytes());
  FUZZ_CHECK(std::isfinite(call.flops()) && call.flops() >= 0, Rpc::kName,
             ": flops ", call.flops());
  FUZZ_CHECK(call.memory_bytes() >= call.output_bytes() &&
                 call.memory_bytes() >= call.workspace_bytes(),
             Rpc::kName, ": memory_bytes ", call.memory_bytes(),
             " below outputs ", call.output_bytes(), " or workspace ",
             call.workspace_bytes());
  FUZZ_CHECK(call.threads() >= 1 && call.threads() <= threads, Rpc::kName, ": ",
             call.threads(), " threads");
  ATTN_RETURN_IF_ERROR(tensors.ReserveKept(request, call.output_bytes()));

  if (call.flops() > kMaxRunFlops || call.memory_bytes() > kMaxRunBytes) {
    return absl::OkStatus();
  }
  const bool finite = WellConditioned(call.args());
  core::CancelToken token;
  ATTN_ASSIGN_OR_RETURN(typename Rpc::Result result, engine.Run(call, token));
  FUZZ_CHECK(result.stats.workspace_bytes == call.workspace_bytes(), Rpc::kName,
             ": ran with ", result.stats.workspace_bytes,
             " bytes of workspace, planned ", call.workspace_bytes());
  CheckOutputs(Rpc::kName, call.outputs(), result, finite);

  typename Rpc::Response response;
  Rpc::Respond(std::move(result), &response, tensors);
  tensors.KeepInputs(request);
  tensors.FillHandles(response.mutable_handles());
  // The response as sent, which the client must be able to parse.
  const grpc::ByteBuffer sent = server::EncodeResponse(response, outgoing);
  std::vector<grpc::Slice> slices;
  FUZZ_CHECK(sent.Dump(&slices).ok(), Rpc::kName, ": response not readable");
  std::string flat;
  for (const grpc::Slice& slice : slices) {
    flat.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  typename Rpc::Response parsed;
  FUZZ_CHECK(parsed.ParseFromString(flat), Rpc::kName,
             ": the encoded response does not parse");
  return absl::OkStatus();
}

// The log line of a call that ended with `status`: one line, printable
// ASCII, whatever the client sent.
template <typename Request>
void CheckLogLine(const char* op, const Request& request,
                  const absl::Status& status) {
  server::RequestRecord record = server::RecordOf(op, request);
  server::SetOutcome(status, &record);
  const std::string line = server::FormatRequestLine(record);
  for (size_t i = 0; i < line.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    FUZZ_CHECK(c >= 0x20 && c < 0x7F, op, ": byte 0x", absl::Hex(c), " at ", i,
               " of the log line ", absl::CHexEscape(line));
  }
  // The JSON form escapes what it needs to; it is fuzzed on its own (log
  // fuzzer), here it only has to be made.
  (void)server::FormatRequestJsonFields(record);
  // ATTNSERVE_FUZZ_VERBOSE=1: the line of every input (e.g. to see what a
  // seed comes to).
  static const bool verbose = std::getenv("ATTNSERVE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n", line.c_str());
}

// The received bytes as gRPC hands them over: slices of `chunk` bytes.
grpc::ByteBuffer Received(const uint8_t* data, size_t size, size_t chunk) {
  std::vector<grpc::Slice> slices;
  if (chunk == 0) chunk = size;
  for (size_t at = 0; at < size; at += chunk) {
    const size_t n = std::min(chunk, size - at);
    slices.emplace_back(data + at, n);
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

template <typename Rpc>
void ServeBytes(const grpc::ByteBuffer& bytes, int threads) {
  typename Rpc::Request request;
  std::vector<grpc::Slice> received;
  wire::RequestPayloads payloads;
  absl::Status status = server::DecodeRequest(bytes, &TheEngine().buffer_pool(),
                                              &received, &request, &payloads);
  if (status.ok()) status = Serve<Rpc>(request, &payloads, threads);
  CheckLogLine(Rpc::kName, request, status);
}

void ServeWorkspaceSize(const grpc::ByteBuffer& bytes, int threads) {
  v1::GetWorkspaceSizeRequest request;
  if (!server::ParseRequest(bytes, &request).ok()) return;
  if (!server::CheckTensorLimits(request, kMaxTensorElements).ok()) return;
  server::OperatorRpcs::ForEach([&](auto rpc) {
    using Rpc = decltype(rpc);
    if (request.op_case() != Rpc::kSizeCase) return;
    const auto& op = static_cast<const typename Rpc::Request&>(
        request.GetReflection()->GetMessage(
            request, request.GetDescriptor()->FindFieldByNumber(
                         static_cast<int>(Rpc::kSizeCase))));
    const absl::Status status = Serve<Rpc>(op, nullptr, threads);
    CheckLogLine(Rpc::kName, op, status);
  });
}

void UploadStream(const uint8_t* data, size_t size, size_t chunk) {
  server::MemoryBudget budget{uint64_t{64} << 20};
  server::TensorStoreOptions options;
  options.capacity_bytes = uint64_t{8} << 20;
  options.expiry_thread = false;
  server::TensorStore store(options, &budget);
  server::TensorUpload upload(&store, &TheEngine().buffer_pool(),
                              kMaxTensorElements);
  // The chunks as protobuf parses them; unknown once it refused a message.
  std::optional<std::string> chunks = std::string();
  size_t at = 0;
  while (at < size) {
    size_t n = size - at;
    if (n >= 2) {
      n = std::min<size_t>(data[at] | size_t{data[at + 1]} << 8, n - 2);
      at += 2;
    }
    const absl::Status taken = upload.Take(Received(data + at, n, chunk));
    if (!taken.ok()) return;
    v1::PutTensorRequest parsed;
    if (chunks.has_value() && parsed.ParseFromArray(data + at, n)) {
      chunks->append(parsed.chunk());
    } else {
      chunks.reset();
    }
    at += n;
  }
  const absl::StatusOr<v1::PutTensorResponse> stored = upload.Store(kOwner);
  if (!stored.ok()) return;
  absl::StatusOr<server::ResidentTensorPtr> tensor = store.Find(
      kOwner, stored->handle(), "handle", server::TensorStore::kUseGet);
  FUZZ_CHECK(tensor.ok(), "a stored upload is not in the store");
  FUZZ_CHECK((*tensor)->size() == stored->bytes(),
             "the stored size differs from the answered one");
  FUZZ_CHECK(
      !chunks.has_value() ||
          absl::string_view((*tensor)->data(), (*tensor)->size()) == *chunks,
      "the stored bytes differ from the chunks protobuf parses");
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs each string field that is not UTF-8 (the requests' handles
  // and layouts often are not): not a failure, and slow.
  google::protobuf::SetLogHandler(nullptr);
  attnserve::fuzz::TheEngine();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = attnserve::fuzz;
  namespace srv = attnserve::server;
  if (size < 2) return 0;
  const uint8_t selector = data[0];
  const size_t chunk = data[1];
  const int threads = (selector & 0x10) != 0 ? 2 : 1;
  if ((selector & 0x20) != 0) {
    fz::UploadStream(data + 2, size - 2, chunk);
    return 0;
  }
  const grpc::ByteBuffer bytes = fz::Received(data + 2, size - 2, chunk);
  switch (selector % 5) {
    case 0:
      fz::ServeBytes<srv::FlashAttentionScoreRpc>(bytes, threads);
      break;
    case 1:
      fz::ServeBytes<srv::FlashAttentionScoreGradRpc>(bytes, threads);
      break;
    case 2:
      fz::ServeBytes<srv::NsaSelectedAttentionRpc>(bytes, threads);
      break;
    case 3:
      fz::ServeBytes<srv::NsaSelectedAttentionGradRpc>(bytes, threads);
      break;
    default:
      fz::ServeWorkspaceSize(bytes, threads);
      break;
  }
  return 0;
}
