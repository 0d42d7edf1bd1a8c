// The tensors of a request or response message, found by reflection: every
// operator's messages name their tensors (query, dy, dq, ...) as singular
// Tensor fields, so code that treats each tensor alike (resolving handles,
// keeping inputs, receiving outputs, printing them) walks them here.
//
//   wire::ForEachTensorField(response,
//       [&](const FieldDescriptor& field, const v1::Tensor& tensor) {
//         std::cout << field.name() << " " << tensor.data().size() << "\n";
//       });
#ifndef ATTNSERVE_WIRE_TENSOR_FIELDS_H_
#define ATTNSERVE_WIRE_TENSOR_FIELDS_H_

#include "attnserve/v1/attention.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace attnserve::wire {

// Calls f(field, tensor) for every singular Tensor field `message` has set,
// in field order.
template <typename F>
void ForEachTensorField(const google::protobuf::Message& message, F&& f) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated() ||
        field->message_type() != v1::Tensor::descriptor() ||
        !reflection->HasField(message, field)) {
      continue;
    }
    f(*field,
      static_cast<const v1::Tensor&>(reflection->GetMessage(message, field)));
  }
}

// The same, with the tensors to change.
template <typename F>
void ForEachTensorField(google::protobuf::Message* message, F&& f) {
  const google::protobuf::Reflection* reflection = message->GetReflection();
  ForEachTensorField(
      static_cast<const google::protobuf::Message&>(*message),
      [&](const google::protobuf::FieldDescriptor& field, const v1::Tensor&) {
        f(field, static_cast<v1::Tensor*>(
                     reflection->MutableMessage(message, &field)));
      });
}

}  // namespace attnserve::wire

#endif  // ATTNSERVE_WIRE_TENSOR_FIELDS_H_
