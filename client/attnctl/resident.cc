#include "attnctl/resident.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "attnctl/report.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/wire/tensor.h"
#include "attnserve/wire/tensor_fields.h"

namespace attnserve::attnctl {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int Fail(const absl::Status& status, std::ostream& err) {
  PrintError(status, err);
  return kExitFailure;
}

double MegabytesPerSecond(uint64_t bytes, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0.0;
}

// The tensor `command` describes, with its data.
absl::StatusOr<v1::Tensor> TensorOf(const PutCommand& command) {
  if (command.input_file.empty()) {
    return MakeRandomTensor(command.shape, command.dtype, command.seed);
  }
  std::ifstream in(command.input_file, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: cannot read ", command.input_file));
  }
  v1::Tensor tensor;
  tensor.set_dtype(command.dtype);
  tensor.mutable_shape()->Assign(command.shape.begin(), command.shape.end());
  tensor.mutable_data()->assign(std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>());
  absl::Status size = wire::CheckData(tensor, "tensor");
  if (!size.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: ", command.input_file, ": ", size.message()));
  }
  return tensor;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  if (text.empty()) return shape;  // A scalar.
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t dim = 0;
    if (!absl::SimpleAtoi(part, &dim) || dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--shape: expected comma-separated dimensions >= 0, got \"", text,
          "\""));
    }
    shape.push_back(dim);
  }
  return shape;
}

namespace {

// "run 2/3: put_s=0.051234 mb_per_s=1309.2" when there is more than one run.
void PrintRun(int i, int repeat, const char* what, uint64_t bytes,
              absl::Duration elapsed, std::ostream& out) {
  if (repeat <= 1) return;
  out << absl::StrFormat("run %d/%d: %s_s=%.6f mb_per_s=%.1f\n", i + 1, repeat,
                         what, absl::ToDoubleSeconds(elapsed),
                         MegabytesPerSecond(bytes, elapsed));
}

}  // namespace

int RunPut(const Client& client, const PutCommand& command,
           const PutOptions& put, int repeat, absl::Duration timeout,
           std::ostream& out, std::ostream& err) {
  absl::StatusOr<v1::Tensor> tensor = TensorOf(command);
  if (!tensor.ok()) {
    err << "attnctl: " << tensor.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<v1::PutTensorResponse> stored;
  absl::Duration elapsed;
  for (int i = 0; i < repeat; ++i) {
    if (i > 0) client.DeleteTensor(stored->handle(), timeout).IgnoreError();
    const absl::Time start = absl::Now();
    stored = client.PutTensor(*tensor, put, timeout);
    elapsed = absl::Now() - start;
    if (!stored.ok()) return Fail(stored.status(), err);
    PrintRun(i, repeat, "put", stored->bytes(), elapsed, out);
  }
  out << "handle: " << stored->handle() << "\n"
      << "bytes: " << stored->bytes() << "\n"
      << absl::StrFormat("expires_in_s: %.0f\n", stored->expires_in_seconds())
      << absl::StrFormat("put_s: %.6f\n", absl::ToDoubleSeconds(elapsed))
      << absl::StrFormat("mb_per_s: %.1f\n",
                         MegabytesPerSecond(stored->bytes(), elapsed));
  return kExitOk;
}

int RunGet(const Client& client, const std::string& handle,
           const std::string& output_file, int repeat, absl::Duration timeout,
           std::ostream& out, std::ostream& err) {
  // Each run receives into the memory the run before it received into.
  v1::Tensor received;
  v1::Tensor* const tensor = &received;
  absl::Duration elapsed;
  for (int i = 0; i < repeat; ++i) {
    const absl::Time start = absl::Now();
    const absl::Status status = client.GetTensor(handle, tensor, timeout);
    elapsed = absl::Now() - start;
    if (!status.ok()) return Fail(status, err);
    PrintRun(i, repeat, "get", tensor->data().size(), elapsed, out);
  }
  if (!output_file.empty()) {
    std::ofstream file(output_file, std::ios::binary | std::ios::trunc);
    file.write(tensor->data().data(),
               static_cast<std::streamsize>(tensor->data().size()));
    if (!file) {
      err << "attnctl: --output: cannot write " << output_file << "\n";
      return kExitFailure;
    }
  }
  out << TensorLine("tensor", *tensor) << "\n"
      << "bytes: " << tensor->data().size() << "\n"
      << absl::StrFormat("get_s: %.6f\n", absl::ToDoubleSeconds(elapsed))
      << absl::StrFormat("mb_per_s: %.1f\n",
                         MegabytesPerSecond(tensor->data().size(), elapsed));
  return kExitOk;
}

int RunRemove(const Client& client, const std::string& handle,
              absl::Duration timeout, std::ostream& out, std::ostream& err) {
  absl::Status deleted = client.DeleteTensor(handle, timeout);
  if (!deleted.ok()) return Fail(deleted, err);
  out << "deleted: " << handle << "\n";
  return kExitOk;
}

ResidentSession::~ResidentSession() {
  for (const std::string& handle : made_) {
    client_.DeleteTensor(handle, timeout_).IgnoreError();
  }
}

void ResidentSession::Remember(const std::string& handle, v1::Tensor* tensor) {
  auto original = std::make_unique<v1::Tensor>();
  original->Swap(tensor);
  *tensor = TensorHandle(
      handle, original->dtype(),
      std::vector<int64_t>(original->shape().begin(), original->shape().end()));
  data_[handle] = original.get();
  originals_.push_back(std::move(original));
}

absl::Status ResidentSession::Upload(google::protobuf::Message* request,
                                     std::ostream& out) {
  absl::Status status;
  wire::ForEachTensorField(
      request,
      [&](const google::protobuf::FieldDescriptor& field, v1::Tensor* t) {
        if (!status.ok() || !t->handle().empty()) return;
        const std::string& name = field.name();
        const absl::Time start = absl::Now();
        absl::StatusOr<v1::PutTensorResponse> stored =
            client_.PutTensor(*t, put_, timeout_);
        const absl::Duration elapsed = absl::Now() - start;
        if (!stored.ok()) {
          status = stored.status();
          return;
        }
        out << absl::StrFormat("put: %s handle=%s bytes=%d put_s=%.6f\n", name,
                               stored->handle(), stored->bytes(),
                               absl::ToDoubleSeconds(elapsed));
        made_.push_back(stored->handle());
        Remember(stored->handle(), t);
      });
  return status;
}

void ResidentSession::AdoptOutputs(
    const google::protobuf::Map<std::string, std::string>& handles,
    google::protobuf::Message* response) {
  wire::ForEachTensorField(
      response,
      [&](const google::protobuf::FieldDescriptor& field, v1::Tensor* t) {
        const auto it = handles.find(field.name());
        if (it == handles.end()) return;
        if (std::find(made_.begin(), made_.end(), it->second) == made_.end()) {
          made_.push_back(it->second);
        }
        if (t->handle().empty()) Remember(it->second, t);
      });
}

void ResidentSession::Release(const std::string& handle) {
  made_.erase(std::remove(made_.begin(), made_.end(), handle), made_.end());
}

}  // namespace attnserve::attnctl
