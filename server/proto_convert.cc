#include "server/proto_convert.h"

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/status_macros.h"

namespace attnserve::server {
namespace {

// Converts an optional tensor field: absent stays nullopt.
absl::Status OptionalView(bool present, const v1::Tensor& tensor,
                          const std::string& field,
                          std::optional<core::TensorView>* out) {
  if (!present) return absl::OkStatus();
  ATTN_ASSIGN_OR_RETURN(*out, ToTensorView(tensor, field));
  return absl::OkStatus();
}

absl::StatusOr<core::TensorView> RequiredView(bool present,
                                              const v1::Tensor& tensor,
                                              const std::string& field) {
  if (!present) return core::InvalidField(field, "is required");
  return ToTensorView(tensor, field);
}

std::vector<int64_t> ToVector(
    const google::protobuf::RepeatedField<int64_t>& values) {
  return std::vector<int64_t>(values.begin(), values.end());
}

// The fields FlashAttentionScoreRequest and FlashAttentionScoreGradRequest
// share (same names, different field numbers).
template <typename Request>
absl::Status FillOptions(const Request& request,
                         core::AttentionOptions* options) {
  ATTN_RETURN_IF_ERROR(
      OptionalView(request.has_pse(), request.pse(), "pse", &options->pse));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_drop_mask(),
                                    request.drop_mask(), "drop_mask",
                                    &options->drop_mask));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_padding_mask(),
                                    request.padding_mask(), "padding_mask",
                                    &options->padding_mask));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_atten_mask(),
                                    request.atten_mask(), "atten_mask",
                                    &options->atten_mask));
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
absl::Status FillNsaOptions(const Request& request, core::NsaOptions* options) {
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_atten_mask(),
                                    request.atten_mask(), "atten_mask",
                                    &options->atten_mask));
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

}  // namespace

absl::StatusOr<core::DType> FromProtoDType(int proto_dtype,
                                           const std::string& field) {
  switch (proto_dtype) {
    case v1::DATA_TYPE_FLOAT32:
      return core::DType::kFloat32;
    case v1::DATA_TYPE_FLOAT16:
      return core::DType::kFloat16;
    case v1::DATA_TYPE_BFLOAT16:
      return core::DType::kBFloat16;
    case v1::DATA_TYPE_FLOAT8_E4M3FN:
      return core::DType::kFloat8E4M3FN;
    case v1::DATA_TYPE_FLOAT8_E5M2:
      return core::DType::kFloat8E5M2;
    case v1::DATA_TYPE_UINT8:
      return core::DType::kUInt8;
    case v1::DATA_TYPE_BOOL:
      return core::DType::kBool;
    case v1::DATA_TYPE_INT32:
      return core::DType::kInt32;
    case v1::DATA_TYPE_INT64:
      return core::DType::kInt64;
    case v1::DATA_TYPE_UNSPECIFIED:
      return core::InvalidField(field,
                                "must be set (got DATA_TYPE_UNSPECIFIED)");
    default:
      return core::InvalidField(
          field, absl::StrCat("unknown DataType value ", proto_dtype));
  }
}

v1::DataType ToProtoDType(core::DType dtype) {
  switch (dtype) {
    case core::DType::kFloat32:
      return v1::DATA_TYPE_FLOAT32;
    case core::DType::kFloat16:
      return v1::DATA_TYPE_FLOAT16;
    case core::DType::kBFloat16:
      return v1::DATA_TYPE_BFLOAT16;
    case core::DType::kFloat8E4M3FN:
      return v1::DATA_TYPE_FLOAT8_E4M3FN;
    case core::DType::kFloat8E5M2:
      return v1::DATA_TYPE_FLOAT8_E5M2;
    case core::DType::kUInt8:
      return v1::DATA_TYPE_UINT8;
    case core::DType::kBool:
      return v1::DATA_TYPE_BOOL;
    case core::DType::kInt32:
      return v1::DATA_TYPE_INT32;
    case core::DType::kInt64:
      return v1::DATA_TYPE_INT64;
  }
  return v1::DATA_TYPE_UNSPECIFIED;
}

absl::StatusOr<core::TensorView> ToTensorView(const v1::Tensor& tensor,
                                              const std::string& field) {
  if (!tensor.handle().empty()) {
    // No tensor is kept on the server yet, so every handle is unknown.
    return absl::NotFoundError(absl::StrCat(
        field,
        ".handle: this server holds no tensor with that handle; send "
        "the data instead"));
  }
  core::TensorView view;
  ATTN_ASSIGN_OR_RETURN(view.dtype,
                        FromProtoDType(tensor.dtype(), field + ".dtype"));
  view.shape.reserve(static_cast<size_t>(tensor.shape_size()));
  int64_t elements = 1;
  bool overflow = false;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t dim = tensor.shape(i);
    if (dim < 0) {
      return core::InvalidField(absl::StrCat(field, ".shape[", i, "]"),
                                absl::StrCat("must be >= 0, got ", dim));
    }
    overflow = overflow || __builtin_mul_overflow(elements, dim, &elements);
    view.shape.push_back(dim);
  }
  int64_t expected_bytes = 0;
  overflow = overflow ||
             __builtin_mul_overflow(
                 elements, static_cast<int64_t>(core::ItemSize(view.dtype)),
                 &expected_bytes);
  if (overflow) {
    return core::InvalidField(field + ".shape",
                              absl::StrCat("byte size of ", ShapeString(tensor),
                                           " overflows a 64-bit integer"));
  }
  if (tensor.data().size() != static_cast<uint64_t>(expected_bytes)) {
    return core::InvalidField(
        field + ".data",
        absl::StrCat("has ", tensor.data().size(), " bytes, expected ",
                     expected_bytes, " = prod(", ShapeString(tensor), ") * ",
                     core::ItemSize(view.dtype), " (",
                     core::DTypeName(view.dtype), ")"));
  }
  view.data = tensor.data().data();
  view.size_bytes = tensor.data().size();
  return view;
}

absl::StatusOr<core::ForwardArgs> ToForwardArgs(
    const v1::FlashAttentionScoreRequest& request) {
  core::ForwardArgs args;
  ATTN_ASSIGN_OR_RETURN(
      args.query, RequiredView(request.has_query(), request.query(), "query"));
  ATTN_ASSIGN_OR_RETURN(args.key,
                        RequiredView(request.has_key(), request.key(), "key"));
  ATTN_ASSIGN_OR_RETURN(
      args.value, RequiredView(request.has_value(), request.value(), "value"));
  ATTN_RETURN_IF_ERROR(FillOptions(request, &args.options));
  return args;
}

absl::StatusOr<core::BackwardArgs> ToBackwardArgs(
    const v1::FlashAttentionScoreGradRequest& request) {
  core::BackwardArgs args;
  ATTN_ASSIGN_OR_RETURN(
      args.query, RequiredView(request.has_query(), request.query(), "query"));
  ATTN_ASSIGN_OR_RETURN(args.key,
                        RequiredView(request.has_key(), request.key(), "key"));
  ATTN_ASSIGN_OR_RETURN(
      args.value, RequiredView(request.has_value(), request.value(), "value"));
  ATTN_ASSIGN_OR_RETURN(args.dy,
                        RequiredView(request.has_dy(), request.dy(), "dy"));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_softmax_max(),
                                    request.softmax_max(), "softmax_max",
                                    &args.softmax_max));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_softmax_sum(),
                                    request.softmax_sum(), "softmax_sum",
                                    &args.softmax_sum));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_softmax_in(),
                                    request.softmax_in(), "softmax_in",
                                    &args.softmax_in));
  ATTN_RETURN_IF_ERROR(OptionalView(request.has_attention_in(),
                                    request.attention_in(), "attention_in",
                                    &args.attention_in));
  ATTN_RETURN_IF_ERROR(FillOptions(request, &args.options));
  return args;
}

absl::StatusOr<core::NsaForwardArgs> ToNsaForwardArgs(
    const v1::NsaSelectedAttentionRequest& request) {
  core::NsaForwardArgs args;
  ATTN_ASSIGN_OR_RETURN(
      args.query, RequiredView(request.has_query(), request.query(), "query"));
  ATTN_ASSIGN_OR_RETURN(args.key,
                        RequiredView(request.has_key(), request.key(), "key"));
  ATTN_ASSIGN_OR_RETURN(
      args.value, RequiredView(request.has_value(), request.value(), "value"));
  ATTN_ASSIGN_OR_RETURN(args.topk_indices,
                        RequiredView(request.has_topk_indices(),
                                     request.topk_indices(), "topk_indices"));
  ATTN_RETURN_IF_ERROR(FillNsaOptions(request, &args.options));
  return args;
}

absl::StatusOr<core::NsaBackwardArgs> ToNsaBackwardArgs(
    const v1::NsaSelectedAttentionGradRequest& request) {
  core::NsaBackwardArgs args;
  ATTN_ASSIGN_OR_RETURN(
      args.query, RequiredView(request.has_query(), request.query(), "query"));
  ATTN_ASSIGN_OR_RETURN(args.key,
                        RequiredView(request.has_key(), request.key(), "key"));
  ATTN_ASSIGN_OR_RETURN(
      args.value, RequiredView(request.has_value(), request.value(), "value"));
  ATTN_ASSIGN_OR_RETURN(args.attention_out,
                        RequiredView(request.has_attention_out(),
                                     request.attention_out(), "attention_out"));
  ATTN_ASSIGN_OR_RETURN(
      args.attention_out_grad,
      RequiredView(request.has_attention_out_grad(),
                   request.attention_out_grad(), "attention_out_grad"));
  ATTN_ASSIGN_OR_RETURN(args.softmax_max,
                        RequiredView(request.has_softmax_max(),
                                     request.softmax_max(), "softmax_max"));
  ATTN_ASSIGN_OR_RETURN(args.softmax_sum,
                        RequiredView(request.has_softmax_sum(),
                                     request.softmax_sum(), "softmax_sum"));
  ATTN_ASSIGN_OR_RETURN(args.topk_indices,
                        RequiredView(request.has_topk_indices(),
                                     request.topk_indices(), "topk_indices"));
  ATTN_RETURN_IF_ERROR(FillNsaOptions(request, &args.options));
  return args;
}

void MoveToProto(core::HostTensor tensor, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(tensor.dtype));
  out->mutable_shape()->Assign(tensor.shape.begin(), tensor.shape.end());
  out->mutable_data()->swap(tensor.bytes);
}

void ToProto(const core::OutputSpec& spec, v1::TensorSpec* out) {
  out->set_name(spec.name);
  out->set_dtype(ToProtoDType(spec.dtype));
  out->mutable_shape()->Assign(spec.shape.begin(), spec.shape.end());
}

std::string ShapeString(const v1::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.shape(), ","), "]");
}

}  // namespace attnserve::server
