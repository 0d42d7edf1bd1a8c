// PlanNsaForward / PlanNsaBackward: resolved figures of valid requests, and
// one refusal per documented constraint (INVALID_ARGUMENT naming the wire
// field).
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "attnserve/core/nsa.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::core {
namespace {

using ::attnserve::test::CausalMask2048;
using ::attnserve::test::NsaCase;
using ::attnserve::test::NsaCaseConfig;
using ::attnserve::test::NsaIndexPattern;
using ::attnserve::test::PackInt32;

// INVALID_ARGUMENT whose field path is exactly `field`.
::testing::AssertionResult IsInvalidField(const absl::Status& status,
                                          const std::string& field) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected INVALID_ARGUMENT naming "
                                         << field << ", got " << status;
  }
  const std::optional<std::string> got = FieldOf(status);
  if (got != field) {
    return ::testing::AssertionFailure()
           << "expected field \"" << field << "\", got "
           << (got.has_value() ? "\"" + *got + "\"" : "no field") << " in "
           << status;
  }
  return ::testing::AssertionSuccess();
}

// Two batches: 5 and 7 query tokens over 64 and 96 keys; N1=4, N2=2,
// D=Dv=128, blocks of 16, 4 per token. Tensors are zero-filled (index 0
// everywhere) and kept alive by the fixture.
class NsaPlanTest : public ::testing::Test {
 protected:
  static constexpr int64_t kT1 = 12, kT2 = 160, kN1 = 4, kN2 = 2, kD = 128;

  TensorView Tensor(DType dtype, std::vector<int64_t> shape) {
    storage_.push_back(MakeHostTensor(dtype, std::move(shape)));
    return storage_.back().view();
  }
  // FLOAT32 of `shape` filled with 1: softmax_sum residuals that pass the
  // statistics check (sums must be positive and finite).
  TensorView PositiveSums(std::vector<int64_t> shape) {
    storage_.push_back(MakeHostTensor(DType::kFloat32, std::move(shape)));
    auto& bytes = storage_.back().bytes;
    const float one = 1.0f;
    for (size_t i = 0; i + sizeof(one) <= bytes.size(); i += sizeof(one)) {
      std::memcpy(&bytes[i], &one, sizeof(one));
    }
    return storage_.back().view();
  }
  // A view of `shape` claiming the right byte size without any memory: for
  // limits that fail before the data is read.
  static TensorView Hollow(DType dtype, std::vector<int64_t> shape) {
    TensorView view;
    view.dtype = dtype;
    size_t bytes = ItemSize(dtype);
    for (int64_t d : shape) bytes *= static_cast<size_t>(d);
    view.shape = std::move(shape);
    view.size_bytes = bytes;
    return view;
  }
  TensorView Topk(const std::vector<int32_t>& values,
                  std::vector<int64_t> shape) {
    storage_.push_back(PackInt32(values, std::move(shape)));
    return storage_.back().view();
  }

  NsaOptions Options() {
    NsaOptions o;
    o.actual_seq_qlen = {5, 12};
    o.actual_seq_kvlen = {64, 160};
    o.scale_value = 0.088;
    o.selected_block_size = 16;
    o.selected_block_count = 4;
    o.head_num = kN1;
    o.input_layout = "TND";
    return o;
  }

  NsaForwardArgs Forward(DType dtype = DType::kFloat32) {
    NsaForwardArgs args;
    args.query = Tensor(dtype, {kT1, kN1, kD});
    args.key = Tensor(dtype, {kT2, kN2, kD});
    args.value = Tensor(dtype, {kT2, kN2, kD});
    args.topk_indices = Tensor(DType::kInt32, {kT1, kN2, 4});
    args.options = Options();
    return args;
  }

  NsaBackwardArgs Backward(DType dtype = DType::kFloat32) {
    const NsaForwardArgs f = Forward(dtype);
    NsaBackwardArgs args;
    args.query = f.query;
    args.key = f.key;
    args.value = f.value;
    args.topk_indices = f.topk_indices;
    args.attention_out = Tensor(dtype, {kT1, kN1, kD});
    args.attention_out_grad = Tensor(dtype, {kT1, kN1, kD});
    args.softmax_max = Tensor(DType::kFloat32, {kT1, kN1, 8});
    args.softmax_sum = PositiveSums({kT1, kN1, 8});
    args.options = f.options;
    return args;
  }

  absl::Status PlanF(const NsaForwardArgs& args) {
    return PlanNsaForward(args).status();
  }
  absl::Status PlanB(const NsaBackwardArgs& args) {
    return PlanNsaBackward(args).status();
  }

 private:
  std::deque<HostTensor> storage_;
};

// ----------------------------------------------------------------------------
// Valid requests.

TEST_F(NsaPlanTest, ForwardResolvesDimsOutputsAndFlops) {
  ATTN_ASSERT_OK_AND_ASSIGN(NsaForwardPlan plan, PlanNsaForward(Forward()));
  const NsaDims& d = plan.dims;
  EXPECT_EQ(d.b, 2);
  EXPECT_EQ(d.t1, kT1);
  EXPECT_EQ(d.t2, kT2);
  EXPECT_EQ(d.n1, 4);
  EXPECT_EQ(d.n2, 2);
  EXPECT_EQ(d.g, 2);
  EXPECT_EQ(d.max_skv, 96);
  EXPECT_FALSE(d.causal);
  // Every token, query head and selected key: 12 * 4 * 4 * 16.
  EXPECT_EQ(plan.attended, 12 * 4 * 4 * 16);
  EXPECT_EQ(plan.flops, 2.0 * 12 * 4 * 4 * 16 * (128 + 128));
  ASSERT_EQ(plan.outputs.size(), 3u);
  EXPECT_EQ(plan.outputs[0].name, "attention_out");
  EXPECT_EQ(plan.outputs[0].shape, (std::vector<int64_t>{12, 4, 128}));
  EXPECT_EQ(plan.outputs[1].shape, (std::vector<int64_t>{12, 4, 8}));
  EXPECT_EQ(plan.outputs[2].dtype, DType::kFloat32);
  ATTN_ASSERT_OK_AND_ASSIGN(NsaForwardPlan plan4, PlanNsaForward(Forward(), 4));
  EXPECT_GT(plan.workspace_bytes, 0u);
  EXPECT_EQ(plan4.workspace_bytes, 4 * plan.workspace_bytes);
}

TEST_F(NsaPlanTest, BackwardResolvesOutputsAndFlops) {
  NsaBackwardArgs args = Backward(DType::kBFloat16);
  ATTN_ASSERT_OK_AND_ASSIGN(NsaBackwardPlan plan, PlanNsaBackward(args));
  EXPECT_EQ(plan.flops, 2.0 * 12 * 4 * 4 * 16 * (3 * 128 + 2 * 128));
  ASSERT_EQ(plan.outputs.size(), 3u);
  EXPECT_EQ(plan.outputs[0].shape, (std::vector<int64_t>{12, 4, 128}));
  EXPECT_EQ(plan.outputs[1].shape, (std::vector<int64_t>{160, 2, 128}));
  EXPECT_EQ(plan.outputs[2].name, "dv");
  EXPECT_EQ(plan.outputs[2].dtype, DType::kBFloat16);
  EXPECT_GE(plan.chunk_tokens, 1);
}

// In sparse_mode 2 the plan counts only the keys the causal rule keeps; the
// reference counts its gathered slots independently.
TEST_F(NsaPlanTest, CausalModeCountsOnlyKeptKeys) {
  NsaCaseConfig config;
  config.sparse_mode = 2;
  config.pattern = NsaIndexPattern::kLocal;
  NsaCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(NsaForwardPlan plan,
                            PlanNsaForward(c.forward_args()));
  int64_t uses = 0;
  for (int64_t u : c.reference_backward().key_uses) uses += u;
  EXPECT_EQ(plan.attended, uses);
  EXPECT_LT(plan.attended, c.t1() * config.n1 * 4 * 16);
  EXPECT_TRUE(plan.dims.causal);
}

TEST_F(NsaPlanTest, AcceptsDuplicatedIndicesAndEmptyQueryBatches) {
  NsaForwardArgs args = Forward();
  args.options.actual_seq_qlen = {0, 12};
  std::vector<int32_t> idx(kT1 * kN2 * 4, 3);  // Block 3 four times.
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  EXPECT_TRUE(PlanNsaForward(args).ok());
}

TEST_F(NsaPlanTest, GradAcceptsValueDimAboveKeyDimButForwardDoesNot) {
  NsaBackwardArgs args = Backward();
  args.value = Tensor(DType::kFloat32, {kT2, kN2, 192});
  args.attention_out = Tensor(DType::kFloat32, {kT1, kN1, 192});
  args.attention_out_grad = Tensor(DType::kFloat32, {kT1, kN1, 192});
  EXPECT_TRUE(PlanNsaBackward(args).ok());
  NsaForwardArgs fwd = Forward();
  fwd.value = args.value;
  EXPECT_TRUE(IsInvalidField(PlanF(fwd), "value.shape[2]"));
}

TEST_F(NsaPlanTest, AcceptsTheStandardCausalMaskInModeTwo) {
  NsaForwardArgs args = Forward();
  args.options.sparse_mode = 2;
  const HostTensor mask = CausalMask2048(DType::kUInt8);
  args.options.atten_mask = mask.view();
  EXPECT_TRUE(PlanNsaForward(args).ok());
}

// ----------------------------------------------------------------------------
// INVALID_ARGUMENT, one rule each.

TEST_F(NsaPlanTest, RejectsLayoutOtherThanTnd) {
  NsaForwardArgs args = Forward();
  args.options.input_layout = "";
  EXPECT_TRUE(IsInvalidField(PlanF(args), "input_layout"));
  args.options.input_layout = "BSND";
  EXPECT_TRUE(IsInvalidField(PlanF(args), "input_layout"));
}

TEST_F(NsaPlanTest, RejectsDtypes) {
  NsaForwardArgs args = Forward();
  args.query = Tensor(DType::kInt32, {kT1, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "query.dtype"));
  args = Forward(DType::kFloat16);
  args.key = Tensor(DType::kBFloat16, {kT2, kN2, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.dtype"));
  args = Forward(DType::kFloat16);
  args.value = Tensor(DType::kFloat32, {kT2, kN2, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "value.dtype"));
}

TEST_F(NsaPlanTest, RejectsRankAndByteSize) {
  NsaForwardArgs args = Forward();
  args.query = Tensor(DType::kFloat32, {1, kT1, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "query.shape"));
  args = Forward();
  args.value.size_bytes -= 4;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "value.data"));
}

TEST_F(NsaPlanTest, RejectsTokenCountsOutsideTheRange) {
  NsaForwardArgs args = Forward();
  args.query = Tensor(DType::kFloat32, {0, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "query.shape[0]"));
  args = Forward();
  args.query = Hollow(DType::kFloat32, {2 * 1024 * 1024 + 1, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "query.shape[0]"));
  args = Forward();
  args.key = Hollow(DType::kFloat32, {2 * 1024 * 1024 + 1, kN2, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.shape[0]"));
}

TEST_F(NsaPlanTest, RejectsHeadNum) {
  NsaForwardArgs args = Forward();
  args.options.head_num = 0;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "head_num"));
  args.options.head_num = 129;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "head_num"));
  args.options.head_num = 2;  // Query has 4 heads.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "head_num"));
}

TEST_F(NsaPlanTest, RejectsKeyHeads) {
  NsaForwardArgs args = Forward();
  args.key = Tensor(DType::kFloat32, {kT2, 3, kD});  // 3 does not divide 4.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.shape[1]"));
  args = Forward();
  args.key = Hollow(DType::kFloat32, {kT2, 129, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.shape[1]"));
}

TEST_F(NsaPlanTest, RejectsGroupLargerThan32) {
  NsaForwardArgs args = Forward();
  args.query = Tensor(DType::kFloat32, {kT1, 64, kD});
  args.options.head_num = 64;
  args.key = Tensor(DType::kFloat32, {kT2, 1, kD});
  args.value = Tensor(DType::kFloat32, {kT2, 1, kD});
  args.topk_indices = Tensor(DType::kInt32, {kT1, 1, 4});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.shape[1]"));
  args.query = Tensor(DType::kFloat32, {kT1, 32, kD});
  args.options.head_num = 32;
  EXPECT_TRUE(PlanNsaForward(args).ok()) << "G = 32 is allowed";
}

TEST_F(NsaPlanTest, RejectsHeadDims) {
  NsaForwardArgs args = Forward();
  args.query = Tensor(DType::kFloat32, {kT1, kN1, 64});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "query.shape[2]"));
  args = Forward();
  args.key = Tensor(DType::kFloat32, {kT2, kN2, 192});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "key.shape[2]"));
  args = Forward();
  args.value = Tensor(DType::kFloat32, {kT2, kN2, 96});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "value.shape[2]"));
}

TEST_F(NsaPlanTest, RejectsValueShapeDifferentFromKey) {
  NsaForwardArgs args = Forward();
  args.value = Tensor(DType::kFloat32, {kT2 - 16, kN2, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "value.shape[0]"));
  args = Forward();
  args.value = Tensor(DType::kFloat32, {kT2, 1, kD});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "value.shape[1]"));
}

TEST_F(NsaPlanTest, RejectsScalars) {
  NsaForwardArgs args = Forward();
  args.options.scale_value = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(IsInvalidField(PlanF(args), "scale_value"));
  args = Forward();
  args.options.sparse_mode = 1;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "sparse_mode"));
  args.options.sparse_mode = 3;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "sparse_mode"));
}

TEST_F(NsaPlanTest, RejectsBlockSize) {
  for (int64_t bs : {0, 8, 24, 144, 256}) {
    SCOPED_TRACE(bs);
    NsaForwardArgs args = Forward();
    args.options.selected_block_size = bs;
    EXPECT_TRUE(IsInvalidField(PlanF(args), "selected_block_size"));
  }
}

TEST_F(NsaPlanTest, RejectsBlockCount) {
  for (int64_t k : {0, 33}) {
    SCOPED_TRACE(k);
    NsaForwardArgs args = Forward();
    args.options.selected_block_count = k;
    EXPECT_TRUE(IsInvalidField(PlanF(args), "selected_block_count"));
  }
}

TEST_F(NsaPlanTest, RejectsMissingOrMismatchedSequenceLengths) {
  NsaForwardArgs args = Forward();
  args.options.actual_seq_qlen.clear();
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_qlen"));
  args = Forward();
  args.options.actual_seq_kvlen.clear();
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen"));
  args = Forward();
  args.options.actual_seq_kvlen = {160};
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen"));
}

TEST_F(NsaPlanTest, RejectsBatchCountAboveTheForwardLimit) {
  NsaForwardArgs args = Forward();
  args.options.actual_seq_qlen.assign(1025, 12);
  args.options.actual_seq_qlen[0] = 0;
  args.options.actual_seq_kvlen.assign(1025, 160);
  args.options.actual_seq_kvlen[0] = 64;
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_qlen"));
}

TEST_F(NsaPlanTest, RejectsDecreasingOrWrongTotalQueryLengths) {
  NsaForwardArgs args = Forward();
  args.options.actual_seq_qlen = {7, 5};
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_qlen[1]"));
  args.options.actual_seq_qlen = {5, 11};
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_qlen[1]"));
}

TEST_F(NsaPlanTest, RejectsQueryBatchLongerThan128K) {
  NsaForwardArgs args = Forward();
  const int64_t t1 = 5 + 128 * 1024 + 1;  // Batch 1: 128K + 1 tokens.
  args.query = Hollow(DType::kFloat32, {t1, kN1, kD});
  args.options.actual_seq_qlen = {5, t1};
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_qlen[1]"));
}

TEST_F(NsaPlanTest, RejectsKeyBatchesThatAreNotWholeBlocksOrTooShort) {
  NsaForwardArgs args = Forward();
  args.options.actual_seq_kvlen = {40, 160};  // 40 < 16 * 4.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen[0]"));
  args.options.actual_seq_kvlen = {64, 150};  // 86 is no multiple of 16.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen[1]"));
  args.options.actual_seq_kvlen = {64, 48};  // Decreasing.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen[1]"));
  args.options.actual_seq_kvlen = {64, 144};  // Sum != T2 = 160.
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen[1]"));
}

TEST_F(NsaPlanTest, RejectsKeyBatchLongerThan128K) {
  NsaForwardArgs args = Forward();
  const int64_t t2 = 128 * 1024 + 64 + 16;
  args.key = Hollow(DType::kFloat32, {t2, kN2, kD});
  args.value = Hollow(DType::kFloat32, {t2, kN2, kD});
  args.options.actual_seq_kvlen = {64, t2};
  EXPECT_TRUE(IsInvalidField(PlanF(args), "actual_seq_kvlen[1]"));
}

TEST_F(NsaPlanTest, RejectsTopkOfWrongDtypeOrShape) {
  NsaForwardArgs args = Forward();
  args.topk_indices = Tensor(DType::kInt64, {kT1, kN2, 4});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "topk_indices.dtype"));
  args.topk_indices = Tensor(DType::kInt32, {kT1, kN2, 3});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "topk_indices.shape"));
  args.topk_indices = Tensor(DType::kInt32, {kT1, kN1, 4});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "topk_indices.shape"));
}

// Batch 0 holds 64 keys (blocks 0-3), batch 1 holds 96 (blocks 0-5): index
// 4 is fine for batch 1 and out of range for batch 0.
TEST_F(NsaPlanTest, RejectsIndexOutsideItsBatchNamingTheElement) {
  std::vector<int32_t> idx(kT1 * kN2 * 4, 0);
  idx[(7 * kN2 + 1) * 4 + 2] = 5;  // Token 7 (batch 1), kv head 1: fine.
  NsaForwardArgs args = Forward();
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  EXPECT_TRUE(PlanNsaForward(args).ok());
  idx[(3 * kN2 + 1) * 4 + 2] = 4;  // Token 3 (batch 0): out of range.
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  const absl::Status status = PlanF(args);
  EXPECT_TRUE(IsInvalidField(status, "topk_indices[3,1,2]"));
  EXPECT_NE(status.message().find("[0, 4)"), std::string::npos) << status;
  idx[(3 * kN2 + 1) * 4 + 2] = 0;
  idx[(11 * kN2 + 0) * 4 + 3] = -1;
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "topk_indices[11,0,3]"));
  idx[(11 * kN2 + 0) * 4 + 3] = 6;
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "topk_indices[11,0,3]"));
}

TEST_F(NsaPlanTest, RejectsMaskOutsideModeTwoOrNotTheCausalMask) {
  const HostTensor causal = CausalMask2048();
  NsaForwardArgs args = Forward();
  args.options.atten_mask = causal.view();
  EXPECT_TRUE(IsInvalidField(PlanF(args), "atten_mask"));  // sparse_mode 0.
  args.options.sparse_mode = 2;
  args.options.atten_mask = Tensor(DType::kFloat32, {2048, 2048});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "atten_mask.dtype"));
  args.options.atten_mask = Tensor(DType::kBool, {kT1, kT2});
  EXPECT_TRUE(IsInvalidField(PlanF(args), "atten_mask.shape"));
  HostTensor other = CausalMask2048();
  other.bytes[5 * 2048 + 100] = 0;  // Unmasks a cell above the diagonal.
  args.options.atten_mask = other.view();
  EXPECT_TRUE(IsInvalidField(PlanF(args), "atten_mask"));
}

TEST_F(NsaPlanTest, GradRejectsAttentionOutAndGradOfWrongShapeOrDtype) {
  NsaBackwardArgs args = Backward();
  args.attention_out = Tensor(DType::kFloat32, {kT1, kN1, 192});
  EXPECT_TRUE(IsInvalidField(PlanB(args), "attention_out.shape"));
  args = Backward();
  args.attention_out_grad = Tensor(DType::kFloat16, {kT1, kN1, kD});
  EXPECT_TRUE(IsInvalidField(PlanB(args), "attention_out_grad.dtype"));
}

TEST_F(NsaPlanTest, GradRejectsSoftmaxStatisticsOfWrongShapeOrDtype) {
  NsaBackwardArgs args = Backward();
  args.softmax_max = Tensor(DType::kFloat32, {kT1, kN1, 1});
  EXPECT_TRUE(IsInvalidField(PlanB(args), "softmax_max.shape"));
  args = Backward();
  args.softmax_sum = Tensor(DType::kFloat16, {kT1, kN1, 8});
  EXPECT_TRUE(IsInvalidField(PlanB(args), "softmax_sum.dtype"));
}

TEST_F(NsaPlanTest, GradChecksTheSameRulesAsTheForward) {
  NsaBackwardArgs args = Backward();
  args.options.selected_block_count = 40;
  EXPECT_TRUE(IsInvalidField(PlanB(args), "selected_block_count"));
  args = Backward();
  std::vector<int32_t> idx(kT1 * kN2 * 4, 0);
  idx[0] = 9;
  args.topk_indices = Topk(idx, {kT1, kN2, 4});
  EXPECT_TRUE(IsInvalidField(PlanB(args), "topk_indices[0,0,0]"));
}

// The grad document allows 2M batches where the forward's allows 1024.
TEST_F(NsaPlanTest, GradAcceptsMoreBatchesThanTheForward) {
  NsaBackwardArgs args = Backward();
  args.options.actual_seq_qlen.assign(1025, 12);
  args.options.actual_seq_kvlen.assign(1025, 160);
  args.options.actual_seq_qlen[0] = 5;
  args.options.actual_seq_kvlen[0] = 64;
  // 1023 empty key batches are too short for K blocks: the grad gets past
  // the batch count and stops at the first of them.
  EXPECT_TRUE(IsInvalidField(PlanB(args), "actual_seq_kvlen[2]"));
}

}  // namespace
}  // namespace attnserve::core
