// pse of every type and shape against the float64 reference, forward and
// backward with dpse: external pse (types 0 and 1) in [B,N1,Sq,Skv],
// [1,N1,Sq,Skv], [B,N1,1,Skv] and the 1024-row compressed forms (Sq > 1024,
// so those cases are small in B, N and D), slopes (types 2 and 3) in
// [B,N1] / [N1] with q_start_idx / kv_start_idx, in padded layouts and TND;
// the test-side reading of the compressed form; refusals.
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/pse_reference.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

// ---------------------------------------------------------------------------
// The test-side pse reading on hand-checked cells.

TEST(PseReferenceTest, CompressedRowsFollowTheirDiagonal) {
  PseSpec s;
  s.form = PseForm::kAlibi;
  s.pse_type = 0;
  s.b = 1;
  s.n1 = 1;
  s.skv = 1030;
  const int64_t sq = 1030;  // First explicit row: 6.
  // Row i >= 6 reads comp[i − 6][j].
  EXPECT_EQ(PseElement(s, 0, 0, 6, 0, sq), 0 * 1030 + 0);
  EXPECT_EQ(PseElement(s, 0, 0, 1029, 17, sq), 1023 * 1030 + 17);
  // Row i < 6 reads comp[1023][j + Sq − 1 − i]: same diagonal offset.
  EXPECT_EQ(PseElement(s, 0, 0, 0, 0, sq), 1023 * 1030 + 1029);
  EXPECT_EQ(PseElement(s, 0, 0, 5, 2, sq), 1023 * 1030 + 1026);
  // m − k = (i − j) − (Sq − 1024) for both kinds of rows.
  for (int64_t i : {0, 3, 5, 6, 400, 1029}) {
    for (int64_t j : {int64_t{0}, i / 2, i}) {
      const int64_t e = PseElement(s, 0, 0, i, j, sq);
      EXPECT_EQ(e / 1030 - e % 1030, (i - j) - (sq - 1024)) << i << "," << j;
    }
  }
  s.form = PseForm::kAlibiShared;
  s.b = 3;
  s.n1 = 2;
  EXPECT_EQ(PseElement(s, 2, 1, 6, 0, sq), (1 * 1024 + 0) * 1030);
}

TEST(PseReferenceTest, SlopesGiveAlibiBiasAndItsDerivative) {
  PseSpec s;
  s.form = PseForm::kSlopes;
  s.b = 2;
  s.n1 = 2;
  s.values = {0.5, 0.25, 0.125, 1.0};
  s.q_start = 3;
  s.kv_start = 1;
  s.pse_type = 2;  // −slope·|(j + 1) − (i + 3)|.
  EXPECT_DOUBLE_EQ(PseBias(s, 1, 0, 0, 0, 9), -0.125 * 2);
  EXPECT_DOUBLE_EQ(PseBias(s, 0, 1, 2, 6, 9), -0.25 * 2);
  s.pse_type = 3;
  EXPECT_DOUBLE_EQ(PseBias(s, 1, 1, 0, 8, 9), -1.0 * std::sqrt(6.0));
  DpseSums sums(4);
  AccumulateDpse(s, 1, 1, 0, 8, 9, 0.5, &sums);
  AccumulateDpse(s, 1, 1, 2, 4, 9, -2.0, &sums);  // rel 0: no share.
  EXPECT_DOUBLE_EQ(sums.dpse[3], 0.5 * -std::sqrt(6.0));
  EXPECT_TRUE(sums.read[3]);
  EXPECT_FALSE(sums.read[0]);
  s.form = PseForm::kSlopesShared;
  s.values = {0.5, 0.25};
  s.pse_type = 2;
  EXPECT_DOUBLE_EQ(PseBias(s, 1, 1, 4, 0, 9), -0.25 * 6);
}

TEST(PseReferenceTest, TypeOneScalesTheExternalPse) {
  PseSpec s;
  s.form = PseForm::kRow;
  s.b = 1;
  s.n1 = 1;
  s.skv = 3;
  s.scale = 0.5;
  s.values = {1.0, 2.0, 4.0};
  s.pse_type = 1;
  EXPECT_DOUBLE_EQ(PseBias(s, 0, 0, 7, 2, 9), 2.0);
  s.pse_type = 0;
  EXPECT_DOUBLE_EQ(PseBias(s, 0, 0, 7, 2, 9), 4.0);
}

// ---------------------------------------------------------------------------
// External pse in the full and row shapes (padded, GQA).

using ExternalParam = std::tuple<PseForm, int64_t, DType>;

FeatureConfig External(PseForm form, int64_t type, DType dtype) {
  FeatureConfig c;
  c.layout = form == PseForm::kRow ? Layout::kBSH : Layout::kBNSD;
  c.dtype = dtype;
  c.b = 2;
  c.n1 = 4;
  c.n2 = 2;
  c.s1 = 37;
  c.s2 = 53;
  c.d = 40;
  c.dv = 40;
  c.pse = form;
  c.pse_type = type;
  c.seed = 300 + static_cast<uint64_t>(form) * 10 + static_cast<uint64_t>(type);
  return c;
}

class ExternalPseTest : public ::testing::TestWithParam<ExternalParam> {
 protected:
  FeatureConfig Config() const {
    const auto [form, type, dtype] = GetParam();
    return External(form, type, dtype);
  }
};

TEST_P(ExternalPseTest, BothDirectionsWithDpse) {
  CheckBothDirections(Config());
}

// Masked cells add nothing to dpse; elements only they read stay 0.
TEST_P(ExternalPseTest, MaskedCellsContributeNothing) {
  FeatureConfig config = Config();
  config.mask = MaskForm::kPerHead;
  config.pre_tokens = 6;
  config.next_tokens = 2;
  config.masked_fraction = 0.3;
  CheckBothDirections(config);
}

TEST_P(ExternalPseTest, BackwardRecomputesWithThePse) {
  CheckBackward(Config(), Residuals::kRecomputed);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExternalPseTest,
    ::testing::Combine(
        ::testing::Values(PseForm::kFull, PseForm::kBatchShared, PseForm::kRow),
        ::testing::Values(0, 1),
        ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16)),
    [](const ::testing::TestParamInfo<ExternalParam>& info) {
      return absl::StrCat(PseFormName(std::get<0>(info.param)), "_type",
                          std::get<1>(info.param), "_",
                          core::DTypeName(std::get<2>(info.param)));
    });

// ---------------------------------------------------------------------------
// The compressed 1024-row form: Sq == Skv > 1024, causal modes only.

struct CompressedCase {
  std::string name;
  PseForm form;
  int64_t type;
  int64_t mode;
  DType dtype;
};

void PrintTo(const CompressedCase& k, std::ostream* os) { *os << k.name; }

FeatureConfig Compressed(const CompressedCase& k) {
  FeatureConfig c;
  c.layout = Layout::kBSND;
  c.dtype = k.dtype;
  c.b = k.form == PseForm::kAlibiShared ? 2 : 1;
  c.n1 = 2;
  c.n2 = 1;
  c.s1 = c.s2 = 1041;
  c.d = 8;
  c.dv = 8;
  c.sparse_mode = k.mode;
  if (k.mode == 0) c.next_tokens = 0;
  c.pse = k.form;
  c.pse_type = k.type;
  c.seed = 17 + static_cast<uint64_t>(k.mode);
  return c;
}

class CompressedPseTest : public ::testing::TestWithParam<CompressedCase> {};

TEST_P(CompressedPseTest, BothDirectionsWithDpse) {
  CheckBothDirections(Compressed(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(
    Causal, CompressedPseTest,
    ::testing::Values(CompressedCase{"BNHS_type1_mode2", PseForm::kAlibi, 1, 2,
                                     DType::kFloat32},
                      CompressedCase{"BNHS_type0_mode3", PseForm::kAlibi, 0, 3,
                                     DType::kFloat32},
                      CompressedCase{"OneNHS_type1_mode0Next0",
                                     PseForm::kAlibiShared, 1, 0,
                                     DType::kFloat32},
                      CompressedCase{"OneNHS_type0_mode2_bf16",
                                     PseForm::kAlibiShared, 0, 2,
                                     DType::kBFloat16},
                      CompressedCase{"BNHS_type1_mode3_fp16", PseForm::kAlibi,
                                     1, 3, DType::kFloat16}),
    [](const ::testing::TestParamInfo<CompressedCase>& info) {
      return info.param.name;
    });

// ---------------------------------------------------------------------------
// Slopes (types 2 and 3): generated ALiBi, Sq == Skv.

using SlopesParam = std::tuple<PseForm, int64_t, DType>;

FeatureConfig Slopes(PseForm form, int64_t type, DType dtype) {
  FeatureConfig c;
  c.layout = Layout::kSBH;
  c.dtype = dtype;
  c.b = 2;
  c.n1 = 6;
  c.n2 = 2;
  c.s1 = c.s2 = 45;
  c.d = 40;
  c.dv = 32;
  c.pse = form;
  c.pse_type = type;
  c.seed = 700 + static_cast<uint64_t>(type);
  return c;
}

class SlopesTest : public ::testing::TestWithParam<SlopesParam> {
 protected:
  FeatureConfig Config() const {
    const auto [form, type, dtype] = GetParam();
    return Slopes(form, type, dtype);
  }
};

TEST_P(SlopesTest, BothDirectionsWithSlopeGradient) {
  CheckBothDirections(Config());
}

TEST_P(SlopesTest, StartIndicesShiftTheBias) {
  FeatureConfig config = Config();
  config.q_start_idx = {7};
  config.kv_start_idx = {2};
  CheckBothDirections(config);
  config.q_start_idx = {0};
  config.kv_start_idx = {30};
  CheckBothDirections(config);
}

TEST_P(SlopesTest, WithCausalModeAndRecomputedResiduals) {
  FeatureConfig config = Config();
  config.sparse_mode = 2;
  config.q_start_idx = {4};
  CheckBothDirections(config);
  CheckBackward(config, Residuals::kRecomputed);
}

INSTANTIATE_TEST_SUITE_P(
    Types, SlopesTest,
    ::testing::Combine(
        ::testing::Values(PseForm::kSlopes, PseForm::kSlopesShared),
        ::testing::Values(2, 3),
        ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16)),
    [](const ::testing::TestParamInfo<SlopesParam>& info) {
      return absl::StrCat(PseFormName(std::get<0>(info.param)), "_type",
                          std::get<1>(info.param), "_",
                          core::DTypeName(std::get<2>(info.param)));
    });

// ---------------------------------------------------------------------------
// TND: slopes per batch (Sq_b == Skv_b) and the compressed form.

TEST(VarlenPseTest, SlopesPerBatch) {
  for (int64_t type : {2, 3}) {
    for (PseForm form : {PseForm::kSlopes, PseForm::kSlopesShared}) {
      FeatureConfig c;
      c.layout = Layout::kTND;
      c.dtype = type == 2 ? DType::kFloat32 : DType::kFloat16;
      c.n1 = 4;
      c.n2 = 2;
      c.d = 40;
      c.dv = 24;
      c.seq_q = {17, 29, 8};
      c.seq_kv = {17, 29, 8};
      c.pse = form;
      c.pse_type = type;
      c.kv_start_idx = {3};
      CheckBothDirections(c);
    }
  }
}

TEST(VarlenPseTest, CompressedFormPerBatch) {
  for (PseForm form : {PseForm::kAlibi, PseForm::kAlibiShared}) {
    FeatureConfig c;
    c.layout = Layout::kTND;
    c.n1 = 1;
    c.n2 = 1;
    c.d = 8;
    c.dv = 8;
    c.seq_q = {1030, 1050};  // S = max Skv_b = 1050.
    c.seq_kv = {1030, 1050};
    c.sparse_mode = 3;
    c.pse = form;
    c.pse_type = 1;
    CheckBothDirections(c);
  }
}

// ---------------------------------------------------------------------------
// Refusals.

TEST(PseRejectTest, ExternalPseOfAnotherShapeOrDtype) {
  FeatureCase c(External(PseForm::kFull, 1, DType::kFloat16));
  const core::HostTensor wide =
      core::MakeHostTensor(DType::kFloat16, {2, 4, 37, 54});
  core::ForwardArgs args = c.forward_args();
  args.options.pse = wide.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
  const core::HostTensor heads2 =
      core::MakeHostTensor(DType::kFloat16, {2, 2, 37, 53});  // N2 heads.
  args.options.pse = heads2.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
  const core::HostTensor fp32 =
      core::MakeHostTensor(DType::kFloat32, {2, 4, 37, 53});
  args.options.pse = fp32.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse.dtype"));
}

TEST(PseRejectTest, CompressedFormNeedsLongCausalSquareProblems) {
  // Sq <= 1024.
  FeatureCase c(External(PseForm::kFull, 1, DType::kFloat32));
  const core::HostTensor comp =
      core::MakeHostTensor(DType::kFloat32, {2, 4, 1024, 53});
  core::ForwardArgs args = c.forward_args();
  args.options.pse = comp.view();
  args.options.sparse_mode = 2;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
  // Not causal: mode 0 with next_tokens != 0.
  FeatureCase big(Compressed({"", PseForm::kAlibi, 1, 2, DType::kFloat32}));
  args = big.forward_args();
  args.options.sparse_mode = 0;
  args.options.next_tokens = 5;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
}

TEST(PseRejectTest, SlopesNeedFloat32AndSquareProblems) {
  FeatureCase c(Slopes(PseForm::kSlopes, 2, DType::kFloat16));
  const core::HostTensor half = core::MakeHostTensor(DType::kFloat16, {2, 6});
  core::ForwardArgs args = c.forward_args();
  args.options.pse = half.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
  const core::HostTensor wrong = core::MakeHostTensor(DType::kFloat32, {6, 2});
  args.options.pse = wrong.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
  // Sq != Skv.
  FeatureCase rect(External(PseForm::kFull, 1, DType::kFloat32));
  const core::HostTensor slopes = core::MakeHostTensor(DType::kFloat32, {4});
  args = rect.forward_args();
  args.options.pse = slopes.view();
  args.options.pse_type = 3;
  const absl::Status st = core::PlanForward(args).status();
  EXPECT_TRUE(IsInvalidOn(st, "pse") || IsInvalidOn(st, "query.shape") ||
              IsInvalidOn(st, "key.shape"))
      << st;
}

TEST(PseRejectTest, StartIndicesHoldAtMostOneElement) {
  FeatureCase c(Slopes(PseForm::kSlopesShared, 2, DType::kFloat32));
  core::ForwardArgs args = c.forward_args();
  args.options.q_start_idx = {1, 2};
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "q_start_idx"));
  args = c.forward_args();
  args.options.kv_start_idx = {0, 0};
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "kv_start_idx"));
}

TEST(PseRejectTest, ModeSevenTakesNoPse) {
  FeatureConfig config;
  config.layout = Layout::kTND;
  config.n1 = 2;
  config.n2 = 1;
  config.seq_q = {9, 12};
  config.seq_kv = {9, 12};
  config.sparse_mode = 7;
  config.pre_tokens = 12;
  config.next_tokens = 0;
  FeatureCase c(config);
  const core::HostTensor slopes = core::MakeHostTensor(DType::kFloat32, {2});
  core::ForwardArgs args = c.forward_args();
  args.options.pse = slopes.view();
  args.options.pse_type = 2;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "pse"));
}

}  // namespace
}  // namespace attnserve::test
