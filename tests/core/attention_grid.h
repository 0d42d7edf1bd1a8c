// The parameter grid shared by the forward and backward kernel tests:
// layout x dtype x head grouping x mask form, on small odd shapes.
#ifndef ATTNSERVE_TESTS_CORE_ATTENTION_GRID_H_
#define ATTNSERVE_TESTS_CORE_ATTENTION_GRID_H_

#include <cstdint>
#include <string>
#include <tuple>

#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"

namespace attnserve::test {

// Query heads x key/value heads.
enum class Heads { kMha, kGqa, kMqa };

using GridParam = std::tuple<core::Layout, core::DType, Heads, MaskKind>;

// B=2, S1=37, S2=53, D=40; MHA 4/4, GQA 6/2, MQA 4/1. The seed differs per
// grid point so that every point sees different data.
inline CaseConfig GridConfig(const GridParam& param) {
  const auto [layout, dtype, heads, mask] = param;
  CaseConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.mask = mask;
  const int64_t n1 = heads == Heads::kGqa ? 6 : 4;
  const int64_t n2 = heads == Heads::kMha ? 4 : (heads == Heads::kGqa ? 2 : 1);
  c.dims = RefDims{2, n1, n2, 37, 53, 40, 40};
  c.seed = 1 + static_cast<uint64_t>(layout) * 1000 +
           static_cast<uint64_t>(dtype) * 100 +
           static_cast<uint64_t>(heads) * 10 + static_cast<uint64_t>(mask);
  return c;
}

inline std::string GridName(const ::testing::TestParamInfo<GridParam>& info) {
  return CaseName(GridConfig(info.param));
}

inline auto GridValues() {
  return ::testing::Combine(
      ::testing::Values(core::Layout::kBSH, core::Layout::kSBH,
                        core::Layout::kBSND, core::Layout::kBNSD),
      ::testing::Values(core::DType::kFloat32, core::DType::kFloat16,
                        core::DType::kBFloat16),
      ::testing::Values(Heads::kMha, Heads::kGqa, Heads::kMqa),
      ::testing::Values(MaskKind::kNone, MaskKind::kFull2D, MaskKind::kShared,
                        MaskKind::kPerBatch, MaskKind::kPerHead));
}

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_CORE_ATTENTION_GRID_H_
