// Shared by the constraint tests of the full operator feature set (TND,
// sparse modes, pse, dropout, FLOAT8): builders for valid padded and TND
// requests of any size, the standard compressed masks, and assertions that a
// valid base request plans and that breaking one rule is refused with
// INVALID_ARGUMENT on the right field.
//
//   PaddedDims dims;                       // B=2, N1=4, N2=2, Sq=5, Skv=7, D=8
//   ForwardArgs fwd = Padded(dims);
//   BackwardArgs bwd = PaddedGrad(dims);
//   EXPECT_TRUE(RejectsBoth(fwd, bwd,
//                           [](auto& a) { a.options.keep_prob = 0; },
//                           {"keep_prob"}));
//
// A rule is refused correctly when FieldOf(status) STARTS WITH one of the
// accepted field names (several only where the conventions leave the name
// open).
#ifndef ATTNSERVE_TESTS_CORE_PLAN_FEATURE_FIXTURE_H_
#define ATTNSERVE_TESTS_CORE_PLAN_FEATURE_FIXTURE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "attnserve/core/params.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/core/plan_fixture.h"
#include "tests/testing/tensors.h"

namespace attnserve::core::plan_testing {

// Standard compressed mask sizes (sparse modes 2, 3, 4, 7, 8 and 6).
inline constexpr int64_t kCompressed = 2048;
inline constexpr int64_t kPrefixCompressedRows = 3072;
// Rows of the ALiBi-compressed pse.
inline constexpr int64_t kPseCompressedRows = 1024;

// INVALID_ARGUMENT whose FieldOf() starts with one of `fields`.
inline ::testing::AssertionResult IsInvalidFieldPrefix(
    const absl::Status& status, const std::vector<std::string>& fields) {
  const std::string wanted = absl::StrJoin(fields, "\" or \"");
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure()
           << "expected INVALID_ARGUMENT on a field starting with \"" << wanted
           << "\", got " << status;
  }
  const std::optional<std::string> got = FieldOf(status);
  if (got.has_value()) {
    for (const std::string& field : fields) {
      if (got->compare(0, field.size(), field) == 0) {
        return ::testing::AssertionSuccess();
      }
    }
  }
  return ::testing::AssertionFailure()
         << "expected a field starting with \"" << wanted << "\", got "
         << (got.has_value() ? "\"" + *got + "\"" : "no field") << " in "
         << status;
}

// Dimensions of a padded request (BSH, SBH, BSND, BNSD).
struct PaddedDims {
  Layout layout = Layout::kBNSD;
  int64_t b = kB;
  int64_t n1 = kN1;
  int64_t n2 = kN2;
  int64_t sq = kS1;
  int64_t skv = kS2;
  int64_t d = kD;
  int64_t dv = kD;
  DType dtype = DType::kFloat32;
};

// Dimensions of a TND request: cumulative end offsets, T1 = cu_q.back(),
// T2 = cu_kv.back(). Default: Sq = {2, 4}, Skv = {3, 5}.
struct TndDims {
  std::vector<int64_t> cu_q = {2, 6};
  std::vector<int64_t> cu_kv = {3, 8};
  int64_t n1 = kN1;
  int64_t n2 = kN2;
  int64_t d = kD;
  int64_t dv = kD;
  DType dtype = DType::kFloat32;

  int64_t t1() const { return cu_q.empty() ? 0 : cu_q.back(); }
  int64_t t2() const { return cu_kv.empty() ? 0 : cu_kv.back(); }
  int64_t batch() const { return static_cast<int64_t>(cu_q.size()); }
  int64_t sq(size_t b) const { return cu_q[b] - (b == 0 ? 0 : cu_q[b - 1]); }
  int64_t skv(size_t b) const { return cu_kv[b] - (b == 0 ? 0 : cu_kv[b - 1]); }
};

class FeaturePlanTest : public PlanTest {
 protected:
  // A valid forward request of `dims` (zero-filled tensors, scale 0.25).
  ForwardArgs Padded(const PaddedDims& dims) {
    ForwardArgs args;
    args.query = Tensor(
        dims.dtype,
        LayoutShape(dims.layout, Bnsd{dims.b, dims.n1, dims.sq, dims.d}));
    args.key = Tensor(
        dims.dtype,
        LayoutShape(dims.layout, Bnsd{dims.b, dims.n2, dims.skv, dims.d}));
    args.value = Tensor(
        dims.dtype,
        LayoutShape(dims.layout, Bnsd{dims.b, dims.n2, dims.skv, dims.dv}));
    args.options.head_num = dims.n1;
    args.options.input_layout = std::string(LayoutName(dims.layout));
    args.options.scale_value = 0.25;
    return args;
  }
  // The matching grad request; with `residuals`, softmax_max/sum
  // [B,N1,Sq,8] and attention_in are sent too.
  BackwardArgs PaddedGrad(const PaddedDims& dims, bool residuals = true) {
    const Bnsd out{dims.b, dims.n1, dims.sq, dims.dv};
    BackwardArgs args = GradOf(Padded(dims));
    args.dy = Tensor(dims.dtype, LayoutShape(dims.layout, out));
    if (residuals) {
      args.softmax_max = Tensor(DType::kFloat32, {dims.b, dims.n1, dims.sq, 8});
      args.softmax_sum = PositiveSums({dims.b, dims.n1, dims.sq, 8});
      args.attention_in = Tensor(dims.dtype, LayoutShape(dims.layout, out));
    }
    return args;
  }

  // A valid TND forward request of `dims`.
  ForwardArgs Tnd(const TndDims& dims) {
    ForwardArgs args;
    args.query = Tensor(dims.dtype, {dims.t1(), dims.n1, dims.d});
    args.key = Tensor(dims.dtype, {dims.t2(), dims.n2, dims.d});
    args.value = Tensor(dims.dtype, {dims.t2(), dims.n2, dims.dv});
    args.options.head_num = dims.n1;
    args.options.input_layout = "TND";
    args.options.actual_seq_qlen = dims.cu_q;
    args.options.actual_seq_kvlen = dims.cu_kv;
    args.options.scale_value = 0.25;
    return args;
  }
  // The matching grad request; with `residuals`, softmax_max/sum [T1,N1,8]
  // and attention_in [T1,N1,Dv] are sent too.
  BackwardArgs TndGrad(const TndDims& dims, bool residuals = true) {
    BackwardArgs args = GradOf(Tnd(dims));
    args.dy = Tensor(dims.dtype, {dims.t1(), dims.n1, dims.dv});
    if (residuals) {
      args.softmax_max = Tensor(DType::kFloat32, {dims.t1(), dims.n1, 8});
      args.softmax_sum = PositiveSums({dims.t1(), dims.n1, 8});
      args.attention_in = Tensor(dims.dtype, {dims.t1(), dims.n1, dims.dv});
    }
    return args;
  }

  // [2048, 2048] triu(ones, 1): the compressed mask of modes 2, 3, 4, 7, 8.
  // `flip` (row, col) inverts one cell.
  TensorView CompressedMask(
      DType dtype = DType::kBool,
      std::optional<std::pair<int64_t, int64_t>> flip = std::nullopt) {
    return StandardMask(kCompressed, dtype, flip);
  }
  // [3072, 2048]: triu(ones, 1) on top of [zeros(1024,1024) |
  // ones(1024,1024)], the compressed mask of mode 6.
  TensorView PrefixCompressedMask(
      DType dtype = DType::kBool,
      std::optional<std::pair<int64_t, int64_t>> flip = std::nullopt) {
    return StandardMask(kPrefixCompressedRows, dtype, flip);
  }

  // A UINT8 tensor of `shape` (zero-filled: every bit drops).
  TensorView Bytes(std::vector<int64_t> shape, DType dtype = DType::kUInt8) {
    return Tensor(dtype, std::move(shape));
  }

 private:
  static BackwardArgs GradOf(const ForwardArgs& f) {
    BackwardArgs args;
    args.query = f.query;
    args.key = f.key;
    args.value = f.value;
    args.options = f.options;
    return args;
  }

  TensorView StandardMask(int64_t rows, DType dtype,
                          std::optional<std::pair<int64_t, int64_t>> flip) {
    std::vector<uint8_t> cells(static_cast<size_t>(rows * kCompressed));
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < kCompressed; ++j) {
        const bool masked =
            i < kCompressed ? j > i : j >= kCompressed / 2;  // Prefix block.
        cells[static_cast<size_t>(i * kCompressed + j)] = masked ? 1 : 0;
      }
    }
    if (flip.has_value()) {
      uint8_t& cell =
          cells[static_cast<size_t>(flip->first * kCompressed + flip->second)];
      cell = cell ? 0 : 1;
    }
    storage_.push_back(
        ::attnserve::test::PackBytes(cells, {rows, kCompressed}, dtype));
    return storage_.back().view();
  }
};

// Applies `edit` to the options of both requests (to build a valid base).
template <typename Edit>
void EditBoth(ForwardArgs& fwd, BackwardArgs& bwd, Edit edit) {
  edit(fwd.options);
  edit(bwd.options);
}

// Sets dy on a grad request and does nothing to a forward request, for
// mutations shared by both.
inline void SetDy(ForwardArgs&, const TensorView&) {}
inline void SetDy(BackwardArgs& args, const TensorView& dy) { args.dy = dy; }

// The base forward request plans; after `mutate` it is refused with
// INVALID_ARGUMENT on a field starting with one of `fields`.
template <typename Mutate>
::testing::AssertionResult RejectsForward(
    ForwardArgs args, Mutate mutate, const std::vector<std::string>& fields) {
  const absl::Status base = PlanForward(args).status();
  if (!base.ok()) {
    return ::testing::AssertionFailure()
           << "the valid base forward request does not plan: " << base;
  }
  mutate(args);
  ::testing::AssertionResult result =
      IsInvalidFieldPrefix(PlanForward(args).status(), fields);
  if (!result) result << " (PlanForward)";
  return result;
}

// As RejectsForward, for PlanBackward.
template <typename Mutate>
::testing::AssertionResult RejectsBackward(
    BackwardArgs args, Mutate mutate, const std::vector<std::string>& fields) {
  const absl::Status base = PlanBackward(args).status();
  if (!base.ok()) {
    return ::testing::AssertionFailure()
           << "the valid base backward request does not plan: " << base;
  }
  mutate(args);
  ::testing::AssertionResult result =
      IsInvalidFieldPrefix(PlanBackward(args).status(), fields);
  if (!result) result << " (PlanBackward)";
  return result;
}

// Both of the above with one mutation (a generic lambda taking `auto&`).
template <typename Mutate>
::testing::AssertionResult RejectsBoth(const ForwardArgs& fwd,
                                       const BackwardArgs& bwd, Mutate mutate,
                                       const std::vector<std::string>& fields) {
  ::testing::AssertionResult forward = RejectsForward(fwd, mutate, fields);
  if (!forward) return forward;
  return RejectsBackward(bwd, mutate, fields);
}

// Both requests plan OK (a positive check beside a rule's refusals).
inline ::testing::AssertionResult PlansBoth(const ForwardArgs& fwd,
                                            const BackwardArgs& bwd) {
  const absl::Status forward = PlanForward(fwd).status();
  if (!forward.ok()) {
    return ::testing::AssertionFailure() << "PlanForward: " << forward;
  }
  const absl::Status backward = PlanBackward(bwd).status();
  if (!backward.ok()) {
    return ::testing::AssertionFailure() << "PlanBackward: " << backward;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace attnserve::core::plan_testing

#endif  // ATTNSERVE_TESTS_CORE_PLAN_FEATURE_FIXTURE_H_
