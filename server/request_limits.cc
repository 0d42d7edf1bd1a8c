#include "server/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/tensor.h"

namespace attnserve::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// The largest batch B the operators accept (2M), hence the longest list of
// per-batch numbers.
constexpr int kMaxRepeated = 2 * 1024 * 1024;
// Layout names and handles are short.
constexpr size_t kMaxString = 256;

absl::Status CheckTensor(const v1::Tensor& tensor, const std::string& field,
                         int64_t max_elements) {
  // First, before anything reads the dimensions one by one.
  if (tensor.shape_size() > wire::kMaxRank) {
    return core::InvalidField(
        field + ".shape",
        absl::StrCat("has rank ", tensor.shape_size(),
                     "; no operator takes a tensor of rank above ",
                     wire::kMaxRank));
  }
  if (tensor.handle().size() > kMaxString) {
    return core::InvalidField(field + ".handle",
                              absl::StrCat("has ", tensor.handle().size(),
                                           " bytes; at most ", kMaxString));
  }
  // A dimension above the limit is refused even when another is 0 (the
  // product alone would let it through).
  for (int i = 0; i < tensor.shape_size(); ++i) {
    if (tensor.shape(i) > max_elements) {
      return core::InvalidField(
          absl::StrCat(field, ".shape[", i, "]"),
          absl::StrCat(tensor.shape(i), " exceeds the limit of ", max_elements,
                       " elements per tensor (--max_tensor_elements)"));
    }
  }
  absl::StatusOr<int64_t> elements = wire::ElementCount(tensor, field);
  if (!elements.ok() && core::FieldOf(elements.status()) != field + ".shape") {
    return elements.status();  // A negative dimension.
  }
  if (!elements.ok() || *elements > max_elements) {
    return core::InvalidField(
        field + ".shape",
        absl::StrCat(elements.ok() ? absl::StrCat(*elements) : "more than 2^63",
                     " elements exceed the limit of ", max_elements,
                     " elements per tensor (--max_tensor_elements)"));
  }
  return absl::OkStatus();
}

// Repeated numbers (actual_seq_*, prefix, start indices: one per batch)
// and strings (layouts, handles), before anything copies them.
absl::Status CheckScalarField(const Message& message,
                              const FieldDescriptor& field,
                              const std::string& path) {
  const Reflection* reflection = message.GetReflection();
  if (field.is_repeated()) {
    const int n = reflection->FieldSize(message, &field);
    if (n > kMaxRepeated) {
      return core::InvalidField(
          path, absl::StrCat("has ", n, " entries; at most ", kMaxRepeated,
                             " (one per batch, and B is at most ", kMaxRepeated,
                             ")"));
    }
    return absl::OkStatus();
  }
  if (field.type() == FieldDescriptor::TYPE_STRING) {  // Not bytes.
    std::string scratch;
    const std::string& text =
        reflection->GetStringReference(message, &field, &scratch);
    if (text.size() > kMaxString) {
      return core::InvalidField(
          path,
          absl::StrCat("has ", text.size(), " bytes; at most ", kMaxString));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMessage(const Message& message, const std::string& prefix,
                          int64_t max_elements) {
  const Descriptor* descriptor = message.GetDescriptor();
  if (descriptor == v1::Tensor::descriptor()) {
    return CheckTensor(static_cast<const v1::Tensor&>(message), prefix,
                       max_elements);
  }
  const Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);  // Only the fields that are set.
  for (const FieldDescriptor* field : fields) {
    const std::string path = prefix.empty()
                                 ? field->name()
                                 : absl::StrCat(prefix, ".", field->name());
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      ATTN_RETURN_IF_ERROR(CheckScalarField(message, *field, path));
      continue;
    }
    if (field->is_repeated()) {
      const int n = reflection->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        ATTN_RETURN_IF_ERROR(
            CheckMessage(reflection->GetRepeatedMessage(message, field, i),
                         absl::StrCat(path, "[", i, "]"), max_elements));
      }
    } else {
      ATTN_RETURN_IF_ERROR(CheckMessage(reflection->GetMessage(message, field),
                                        path, max_elements));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTensorLimits(const Message& request, int64_t max_elements) {
  return CheckMessage(request, "", max_elements);
}

}  // namespace attnserve::server
