#include "server/request_limits.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"

namespace attnserve::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status CheckTensor(const v1::Tensor& tensor, const std::string& field,
                         int64_t max_elements) {
  int64_t elements = 1;
  bool overflow = false;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t dim = tensor.shape(i);
    if (dim < 0) {
      return core::InvalidField(absl::StrCat(field, ".shape[", i, "]"),
                                absl::StrCat("must be >= 0, got ", dim));
    }
    if (dim > max_elements) {
      return core::InvalidField(
          absl::StrCat(field, ".shape[", i, "]"),
          absl::StrCat(dim, " exceeds the limit of ", max_elements,
                       " elements per tensor (--max_tensor_elements)"));
    }
    overflow = overflow || __builtin_mul_overflow(elements, dim, &elements);
  }
  if (overflow || elements > max_elements) {
    return core::InvalidField(
        field + ".shape",
        absl::StrCat(overflow ? "more than 2^63" : absl::StrCat(elements),
                     " elements exceed the limit of ", max_elements,
                     " elements per tensor (--max_tensor_elements)"));
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
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const std::string path = prefix.empty()
                                 ? field->name()
                                 : absl::StrCat(prefix, ".", field->name());
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
