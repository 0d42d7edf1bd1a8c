#include "server/proto_convert.h"

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/tensor.h"

namespace attnserve::server {
namespace {

// The tensor field `name` of `request`, or null when it is not set.
const v1::Tensor* TensorField(const google::protobuf::Message& request,
                              const char* name) {
  const google::protobuf::FieldDescriptor* field =
      request.GetDescriptor()->FindFieldByName(name);
  assert(field != nullptr && field->message_type() == v1::Tensor::descriptor());
  const google::protobuf::Reflection* reflection = request.GetReflection();
  if (!reflection->HasField(request, field)) return nullptr;
  return static_cast<const v1::Tensor*>(
      &reflection->GetMessage(request, field));
}

// Views of the required tensor fields (name, destination) of `request`; a
// missing one is INVALID_ARGUMENT naming it.
absl::Status Required(
    const google::protobuf::Message& request, HandleResolver* handles,
    wire::RequestPayloads* payloads,
    std::initializer_list<std::pair<const char*, core::TensorView*>> fields,
    PayloadBytes bytes = PayloadBytes::kContiguous) {
  for (const auto& [name, out] : fields) {
    const v1::Tensor* tensor = TensorField(request, name);
    if (tensor == nullptr) return core::InvalidField(name, "is required");
    ATTN_ASSIGN_OR_RETURN(
        *out, ToTensorView(*tensor, name, handles, payloads, bytes));
  }
  return absl::OkStatus();
}

// The same for optional tensor fields: absent ones stay nullopt.
absl::Status Optional(
    const google::protobuf::Message& request, HandleResolver* handles,
    wire::RequestPayloads* payloads,
    std::initializer_list<
        std::pair<const char*, std::optional<core::TensorView>*>>
        fields,
    PayloadBytes bytes = PayloadBytes::kContiguous) {
  for (const auto& [name, out] : fields) {
    const v1::Tensor* tensor = TensorField(request, name);
    if (tensor == nullptr) continue;
    ATTN_ASSIGN_OR_RETURN(
        *out, ToTensorView(*tensor, name, handles, payloads, bytes));
  }
  return absl::OkStatus();
}

std::vector<int64_t> ToVector(
    const google::protobuf::RepeatedField<int64_t>& values) {
  return std::vector<int64_t>(values.begin(), values.end());
}

// The fields FlashAttentionScoreRequest and FlashAttentionScoreGradRequest
// share (same names, different field numbers).
template <typename Request>
absl::Status FillOptions(const Request& request, HandleResolver* handles,
                         wire::RequestPayloads* payloads,
                         core::AttentionOptions* options) {
  ATTN_RETURN_IF_ERROR(Optional(request, handles, payloads,
                                {{"pse", &options->pse},
                                 {"drop_mask", &options->drop_mask},
                                 {"padding_mask", &options->padding_mask},
                                 {"atten_mask", &options->atten_mask}}));
  options->prefix = ToVector(request.prefix());
  options->actual_seq_qlen = ToVector(request.actual_seq_qlen());
  options->actual_seq_kvlen = ToVector(request.actual_seq_kvlen());
  options->q_start_idx = ToVector(request.q_start_idx());
  options->kv_start_idx = ToVector(request.kv_start_idx());
  options->scale_value =
      request.has_scale_value() ? request.scale_value() : 1.0;
  options->keep_prob = request.has_keep_prob() ? request.keep_prob() : 1.0;
  options->pre_tokens = request.has_pre_tokens() ? request.pre_tokens()
                                                 : core::kDefaultWindowTokens;
  options->next_tokens = request.has_next_tokens() ? request.next_tokens()
                                                   : core::kDefaultWindowTokens;
  options->head_num = request.head_num();
  options->input_layout = request.input_layout();
  options->inner_precise = request.inner_precise();
  options->sparse_mode = request.sparse_mode();
  options->pse_type = request.has_pse_type() ? request.pse_type() : 1;
  if (request.has_seed()) options->seed = request.seed();
  if (request.has_offset()) options->offset = request.offset();
  return absl::OkStatus();
}

// The fields NsaSelectedAttentionRequest and NsaSelectedAttentionGradRequest
// share.
template <typename Request>
absl::Status FillNsaOptions(const Request& request, HandleResolver* handles,
                            wire::RequestPayloads* payloads,
                            core::NsaOptions* options) {
  ATTN_RETURN_IF_ERROR(Optional(request, handles, payloads,
                                {{"atten_mask", &options->atten_mask}}));
  options->actual_seq_qlen = ToVector(request.actual_seq_qlen());
  options->actual_seq_kvlen = ToVector(request.actual_seq_kvlen());
  options->scale_value =
      request.has_scale_value() ? request.scale_value() : 1.0;
  options->selected_block_size = request.selected_block_size();
  options->selected_block_count = request.selected_block_count();
  options->head_num = request.head_num();
  options->input_layout = request.input_layout();
  options->sparse_mode = request.sparse_mode();
  return absl::OkStatus();
}

// "[2,8,128]".
std::string DimsString(absl::Span<const int64_t> dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// The view of a tensor sent by handle, checked against what the request
// states about it.
absl::StatusOr<core::TensorView> ResolveHandle(
    const v1::Tensor& tensor, const std::string& field, HandleResolver* handles,
    const wire::RequestPayloads* payloads) {
  const std::optional<size_t> received =
      payloads == nullptr
          ? std::nullopt
          : payloads->SizeOf(tensor, v1::Tensor::kDataFieldNumber);
  if (!tensor.data().empty() || received.value_or(0) > 0) {
    return core::InvalidField(
        field + ".data",
        absl::StrCat("must be empty when ", field,
                     ".handle is set (send the data or the handle, not both)"));
  }
  if (handles == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        field, ".handle: this server keeps no tensors; send the data instead"));
  }
  ATTN_ASSIGN_OR_RETURN(core::TensorView view,
                        handles->Resolve(field, tensor.handle()));
  if (tensor.dtype() != v1::DATA_TYPE_UNSPECIFIED &&
      tensor.dtype() != wire::ToWireDType(view.dtype)) {
    return core::InvalidField(
        field + ".dtype",
        absl::StrCat("is ", wire::DataTypeName(tensor.dtype()),
                     " but the stored tensor ", field, ".handle names is ",
                     wire::DataTypeName(wire::ToWireDType(view.dtype))));
  }
  if (tensor.shape_size() > 0 &&
      !std::equal(tensor.shape().begin(), tensor.shape().end(),
                  view.shape.begin(), view.shape.end())) {
    return core::InvalidField(
        field + ".shape",
        absl::StrCat("is ", wire::ShapeString(tensor),
                     " but the stored tensor ", field, ".handle names is ",
                     DimsString(view.shape)));
  }
  return view;
}

}  // namespace

OutputSink& MoveToResponse() {
  class Sink final : public OutputSink {
   public:
    void Put(const std::string& /*field*/, core::HostTensor tensor,
             v1::Tensor* out) override {
      MoveToProto(std::move(tensor), out);
    }
  };
  static Sink* const sink = new Sink();
  return *sink;
}

absl::StatusOr<core::TensorView> ToTensorView(const v1::Tensor& tensor,
                                              const std::string& field,
                                              HandleResolver* handles,
                                              wire::RequestPayloads* payloads,
                                              PayloadBytes bytes) {
  if (!tensor.handle().empty()) {
    return ResolveHandle(tensor, field, handles, payloads);
  }
  const std::optional<size_t> received =
      payloads == nullptr
          ? std::nullopt
          : payloads->SizeOf(tensor, v1::Tensor::kDataFieldNumber);
  core::TensorView view;
  if (received.has_value()) {
    // Checked before the bytes are copied out of the received message.
    ATTN_RETURN_IF_ERROR(wire::CheckDataSize(tensor, *received, field));
    const absl::Status gone = absl::InternalError(
        absl::StrCat(field, ".data: the received bytes are gone"));
    if (bytes == PayloadBytes::kChunked) {
      view.chunks = payloads->Chunks(tensor, v1::Tensor::kDataFieldNumber);
      if (view.chunks == nullptr) return gone;
      view.size_bytes = view.chunks->size();
    } else {
      const core::Buffer* joined =
          payloads->Get(tensor, v1::Tensor::kDataFieldNumber);
      if (joined == nullptr) return gone;
      view.data = joined->data();
      view.size_bytes = joined->size();
    }
  } else {
    ATTN_RETURN_IF_ERROR(wire::CheckData(tensor, field));
    view.data = tensor.data().data();
    view.size_bytes = tensor.data().size();
  }
  ATTN_ASSIGN_OR_RETURN(view.dtype,
                        wire::ToCoreDType(tensor.dtype(), field + ".dtype"));
  view.shape.assign(tensor.shape().begin(), tensor.shape().end());
  return view;
}

absl::StatusOr<core::ForwardArgs> ToForwardArgs(
    const v1::FlashAttentionScoreRequest& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  core::ForwardArgs args;
  ATTN_RETURN_IF_ERROR(Required(
      request, handles, payloads,
      {{"query", &args.query}, {"key", &args.key}, {"value", &args.value}},
      PayloadBytes::kChunked));
  ATTN_RETURN_IF_ERROR(FillOptions(request, handles, payloads, &args.options));
  return args;
}

absl::StatusOr<core::BackwardArgs> ToBackwardArgs(
    const v1::FlashAttentionScoreGradRequest& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  core::BackwardArgs args;
  ATTN_RETURN_IF_ERROR(Required(request, handles, payloads,
                                {{"query", &args.query},
                                 {"key", &args.key},
                                 {"value", &args.value},
                                 {"dy", &args.dy}},
                                PayloadBytes::kChunked));
  ATTN_RETURN_IF_ERROR(Optional(request, handles, payloads,
                                {{"softmax_max", &args.softmax_max},
                                 {"softmax_sum", &args.softmax_sum},
                                 {"softmax_in", &args.softmax_in}}));
  ATTN_RETURN_IF_ERROR(Optional(request, handles, payloads,
                                {{"attention_in", &args.attention_in}},
                                PayloadBytes::kChunked));
  ATTN_RETURN_IF_ERROR(FillOptions(request, handles, payloads, &args.options));
  return args;
}

absl::StatusOr<core::NsaForwardArgs> ToNsaForwardArgs(
    const v1::NsaSelectedAttentionRequest& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  core::NsaForwardArgs args;
  ATTN_RETURN_IF_ERROR(Required(request, handles, payloads,
                                {{"query", &args.query},
                                 {"key", &args.key},
                                 {"value", &args.value},
                                 {"topk_indices", &args.topk_indices}}));
  ATTN_RETURN_IF_ERROR(
      FillNsaOptions(request, handles, payloads, &args.options));
  return args;
}

absl::StatusOr<core::NsaBackwardArgs> ToNsaBackwardArgs(
    const v1::NsaSelectedAttentionGradRequest& request, HandleResolver* handles,
    wire::RequestPayloads* payloads) {
  core::NsaBackwardArgs args;
  ATTN_RETURN_IF_ERROR(
      Required(request, handles, payloads,
               {{"query", &args.query},
                {"key", &args.key},
                {"value", &args.value},
                {"attention_out", &args.attention_out},
                {"attention_out_grad", &args.attention_out_grad},
                {"softmax_max", &args.softmax_max},
                {"softmax_sum", &args.softmax_sum},
                {"topk_indices", &args.topk_indices}}));
  ATTN_RETURN_IF_ERROR(
      FillNsaOptions(request, handles, payloads, &args.options));
  return args;
}

void MoveToProto(core::HostTensor tensor, v1::Tensor* out,
                 wire::OutgoingPayloads* payloads) {
  out->set_dtype(wire::ToWireDType(tensor.dtype));
  out->mutable_shape()->Assign(tensor.shape.begin(), tensor.shape.end());
  if (payloads != nullptr) {
    payloads->Set(out, v1::Tensor::kDataFieldNumber, std::move(tensor.bytes));
  } else {
    out->set_data(tensor.bytes.data(), tensor.bytes.size());
  }
}

void ToProto(const core::OutputSpec& spec, v1::TensorSpec* out) {
  out->set_name(spec.name);
  out->set_dtype(wire::ToWireDType(spec.dtype));
  out->mutable_shape()->Assign(spec.shape.begin(), spec.shape.end());
}

}  // namespace attnserve::server
