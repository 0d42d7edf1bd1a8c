#include "attnserve/client/resident.h"

#include <vector>

namespace attnserve {

int ReplaceHandles(const HandleData& data, google::protobuf::Message* request) {
  using google::protobuf::FieldDescriptor;
  if (request->GetDescriptor() == v1::Tensor::descriptor()) {
    auto* tensor = static_cast<v1::Tensor*>(request);
    const auto it = data.find(tensor->handle());
    if (tensor->handle().empty() || it == data.end()) return 0;
    tensor->set_dtype(it->second->dtype());
    *tensor->mutable_shape() = it->second->shape();
    tensor->set_data(it->second->data());
    tensor->clear_handle();
    return 1;
  }
  const google::protobuf::Reflection* reflection = request->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*request, &fields);
  int replaced = 0;
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(*request, field); ++i) {
        replaced += ReplaceHandles(
            data, reflection->MutableRepeatedMessage(request, field, i));
      }
    } else {
      replaced +=
          ReplaceHandles(data, reflection->MutableMessage(request, field));
    }
  }
  return replaced;
}

}  // namespace attnserve
