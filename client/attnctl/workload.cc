#include "attnctl/workload.h"

#include "absl/strings/str_cat.h"
#include "attnserve/client/tensor_helpers.h"

namespace attnserve::attnctl {

uint64_t InputSeed(uint64_t seed, Input input) {
  // SplitMix64 finalizer.
  uint64_t z = seed * 8 + static_cast<uint64_t>(input) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

absl::StatusOr<v1::Tensor> RandomInput(const Workload& w,
                                       const std::vector<int64_t>& shape,
                                       Input input) {
  return MakeRandomTensor(shape, w.dtype, InputSeed(w.seed, input));
}

absl::Status CheckPositive(
    std::initializer_list<std::pair<const char*, int64_t>> flags) {
  for (const auto& [flag, value] : flags) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": must be positive, got ", value));
    }
  }
  return absl::OkStatus();
}

}  // namespace attnserve::attnctl
