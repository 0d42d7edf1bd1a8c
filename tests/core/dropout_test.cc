// Dropout against the float64 reference: a random drop_mask (any shape with
// enough bytes, also with keep_prob == 1), and the seed/offset mask the test
// generates with its own Philox-4x32-10 (checked against the published
// known-answer vectors); the same bits for any thread count; the backward
// regenerating the forward's mask; combinations with sparse modes and pse;
// refusals.
#include <cstdint>
#include <string>
#include <vector>

#include "attnserve/core/plan.h"
#include "gtest/gtest.h"
#include "tests/core/feature_checks.h"
#include "tests/testing/compare.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/param_names.h"
#include "tests/testing/philox.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;

// ---------------------------------------------------------------------------
// The test-side generator.

// Random123's kat_vectors for philox4x32 with 10 rounds: counter, key,
// expected output.
TEST(PhiloxTest, MatchesPublishedKnownAnswers) {
  EXPECT_EQ(Philox4x32x10({0, 0, 0, 0}, {0, 0}),
            (PhiloxBlock{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32x10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                          {0xffffffff, 0xffffffff}),
            (PhiloxBlock{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32x10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                          {0xa4093822, 0x299f31d0}),
            (PhiloxBlock{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, ThresholdIsFloorOfFloat32KeepProbTimesTwoToThe32) {
  EXPECT_EQ(PhiloxKeepThreshold(1.0f), uint64_t{1} << 32);
  EXPECT_EQ(PhiloxKeepThreshold(0.5f), uint64_t{1} << 31);
  // float32(0.9) = 15099494 / 2^24; float32(0.1) = 13421773 / 2^27.
  EXPECT_EQ(PhiloxKeepThreshold(0.9f), uint64_t{15099494} << 8);
  EXPECT_EQ(PhiloxKeepThreshold(0.1f), uint64_t{13421773} << 5);
}

// Bit k reads word k & 3 of the block at counter {lo, hi of k >> 2, lo, hi
// of offset} under key {lo, hi of seed}.
TEST(PhiloxTest, KeepBitReadsTheDocumentedWord) {
  const uint64_t seed = 0x1234567890abcdefull, offset = 0x0000000500000007ull;
  const uint64_t k = (uint64_t{0x3} << 34) + 4 * 9 + 2;  // Block hi word 3.
  const PhiloxBlock block =
      Philox4x32x10({9, 0x3, 0x7, 0x5}, {0x90abcdef, 0x12345678});
  for (float kp : {0.3f, 0.6f, 0.95f}) {
    EXPECT_EQ(PhiloxKeepBit(seed, offset, k, kp),
              block[2] < PhiloxKeepThreshold(kp))
        << kp;
  }
  EXPECT_TRUE(PhiloxKeepBit(seed, offset, k, 1.0f));
}

TEST(PhiloxTest, KeptFractionFollowsKeepProb) {
  for (float kp : {0.1f, 0.5f, 0.85f}) {
    int kept = 0;
    constexpr int kBits = 200000;
    for (int k = 0; k < kBits; ++k) kept += PhiloxKeepBit(42, 3, k, kp);
    EXPECT_NEAR(static_cast<double>(kept) / kBits, kp, 0.005) << kp;
  }
}

// ---------------------------------------------------------------------------
// drop_mask.

FeatureConfig Padded(Layout layout, DType dtype) {
  FeatureConfig c;
  c.layout = layout;
  c.dtype = dtype;
  c.b = 2;
  c.n1 = 4;
  c.n2 = 2;
  c.s1 = 37;
  c.s2 = 53;
  c.d = 40;
  c.dv = 40;
  c.seed =
      900 + static_cast<uint64_t>(dtype) * 10 + static_cast<uint64_t>(layout);
  return c;
}

FeatureConfig Varlen(DType dtype) {
  FeatureConfig c;
  c.layout = Layout::kTND;
  c.dtype = dtype;
  c.n1 = 6;
  c.n2 = 2;
  c.d = 40;
  c.dv = 24;
  c.seq_q = {17, 0, 29, 11};
  c.seq_kv = {23, 14, 19, 0};
  c.seed = 950 + static_cast<uint64_t>(dtype);
  return c;
}

class DropoutDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(DropoutDtypeTest, DropMaskReproducesInEveryLayout) {
  for (Layout layout :
       {Layout::kBSH, Layout::kSBH, Layout::kBSND, Layout::kBNSD}) {
    FeatureConfig config = Padded(layout, GetParam());
    config.dropout = DropoutKind::kMask;
    config.keep_prob = 0.8;
    config.mask = MaskForm::kPerBatch;
    CheckBothDirections(config);
  }
}

TEST_P(DropoutDtypeTest, DropMaskOfAnotherShapeWithSpareBytes) {
  FeatureConfig config = Padded(Layout::kBNSD, GetParam());
  config.dropout = DropoutKind::kMask;
  config.keep_prob = 0.6;
  config.drop_mask_shape = DropMaskShape::kPadded4D;  // [B,N1,Sq,ceil(Skv/8)]
  CheckBothDirections(config);
}

TEST_P(DropoutDtypeTest, DropMaskAppliesWithKeepProbOne) {
  FeatureConfig config = Padded(Layout::kBSND, GetParam());
  config.dropout = DropoutKind::kMask;
  config.keep_prob = 1.0;
  config.drop_mask_keep_fraction = 0.7;
  CheckBothDirections(config);
}

TEST_P(DropoutDtypeTest, DropMaskInVarlen) {
  FeatureConfig config = Varlen(GetParam());
  config.dropout = DropoutKind::kMask;
  config.keep_prob = 0.75;
  config.drop_mask_extra_bytes = 0;  // Exactly ceil(total / 8) bytes.
  CheckBothDirections(config);
}

// ---------------------------------------------------------------------------
// seed / offset.

TEST_P(DropoutDtypeTest, SeedReproducesThePhiloxMask) {
  FeatureConfig config = Padded(Layout::kBSH, GetParam());
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.7;
  config.dropout_seed = 1234;
  CheckBothDirections(config);
  config.dropout_offset = 77;
  config.dropout_seed = 0xfedcba9876543210ull;  // Both key words used.
  CheckBothDirections(config);
}

TEST_P(DropoutDtypeTest, SeedInVarlen) {
  FeatureConfig config = Varlen(GetParam());
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.85;
  config.dropout_seed = 5;
  config.dropout_offset = uint64_t{1} << 40;
  CheckBothDirections(config);
}

// The backward regenerates the forward's mask: with the kernel's residuals,
// with none, and with the reference's.
TEST_P(DropoutDtypeTest, GradientIsConsistentWithTheForward) {
  FeatureConfig config = Padded(Layout::kSBH, GetParam());
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.5;
  config.dropout_seed = 31337;
  config.mask = MaskForm::kPerHead;
  CheckBothDirections(config);
  CheckBackward(config, Residuals::kRecomputed);
  CheckBackward(config, Residuals::kReference);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, DropoutDtypeTest, ComputeDTypes(),
                         DTypeParamName);

// A request with seed gives the same outputs as the request with the test's
// own Philox bits sent as drop_mask.
TEST(DropoutTest, SeedEqualsItsPhiloxBitsSentAsDropMask) {
  FeatureConfig config = Padded(Layout::kBNSD, DType::kFloat32);
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.65;
  config.dropout_seed = 8;
  config.dropout_offset = 3;
  FeatureCase c(config);
  const std::string bits = c.DropKeepBytes();
  const core::HostTensor drop_mask =
      PackBytes(std::vector<uint8_t>(bits.begin(), bits.end()),
                {static_cast<int64_t>(bits.size())}, DType::kUInt8);
  core::ForwardArgs with_mask = c.forward_args();
  with_mask.options.seed.reset();
  with_mask.options.offset.reset();
  with_mask.options.drop_mask = drop_mask.view();
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult from_mask,
                            RunForward(with_mask));
  ExpectForwardMatches(c, from_mask, FeatureTolerances(config));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult from_seed,
                            RunForward(c.forward_args()));
  ExpectForwardMatches(c, from_seed, FeatureTolerances(config));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> a,
      c.UnpackTensor(from_mask.attention_out, 4, 40, true, DType::kFloat32));
  ATTN_ASSERT_OK_AND_ASSIGN(
      std::vector<double> b,
      c.UnpackTensor(from_seed.attention_out, 4, 40, true, DType::kFloat32));
  EXPECT_TRUE(AllClose("seed vs drop_mask", b, a, 1e-6));
}

TEST(DropoutTest, SameSeedGivesTheSameBitsForOneAndThreeThreads) {
  FeatureConfig config = Padded(Layout::kBSND, DType::kBFloat16);
  config.s1 = 300;
  config.s2 = 270;
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.9;
  config.dropout_seed = 2024;
  FeatureCase c(config);
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult one,
                            RunForward(c.forward_args(), 1));
  ExpectForwardMatches(c, one, FeatureTolerances(config));
  ATTN_ASSERT_OK_AND_ASSIGN(core::ForwardResult three,
                            RunForward(c.forward_args(), 3));
  EXPECT_TRUE(one.attention_out.bytes == three.attention_out.bytes);
  EXPECT_TRUE(one.softmax_max.bytes == three.softmax_max.bytes);
  EXPECT_TRUE(one.softmax_sum.bytes == three.softmax_sum.bytes);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult g1,
                            RunBackward(c.backward_args(&one), 1));
  ExpectBackwardMatches(c, g1, FeatureTolerances(config),
                        Residuals::kKernelForward);
  ATTN_ASSERT_OK_AND_ASSIGN(core::BackwardResult g3,
                            RunBackward(c.backward_args(&one), 3));
  EXPECT_TRUE(g1.dq.bytes == g3.dq.bytes);
  EXPECT_TRUE(g1.dk.bytes == g3.dk.bytes);
  EXPECT_TRUE(g1.dv.bytes == g3.dv.bytes);
}

// keep_prob == 1 without drop_mask: no dropout, seed and offset ignored.
TEST(DropoutTest, SeedIsIgnoredWithKeepProbOne) {
  FeatureConfig config = Padded(Layout::kBSH, DType::kFloat32);
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 1.0;
  config.dropout_seed = 77;
  FeatureCase c(config);
  ASSERT_FALSE(c.has_dropout());
  CheckBothDirections(config);
}

// Different offsets give different masks (and the kernel follows each).
TEST(DropoutTest, OffsetSelectsAnotherStream) {
  FeatureConfig a = Padded(Layout::kBNSD, DType::kFloat16);
  a.dropout = DropoutKind::kSeed;
  a.keep_prob = 0.5;
  a.dropout_seed = 11;
  FeatureConfig b = a;
  b.dropout_offset = 1;
  EXPECT_NE(FeatureCase(a).DropKeepBytes(), FeatureCase(b).DropKeepBytes());
  CheckBothDirections(a);
  CheckBothDirections(b);
}

TEST(DropoutTest, WithSparseModeAndPse) {
  FeatureConfig config = Padded(Layout::kBSND, DType::kFloat32);
  config.s1 = config.s2 = 45;
  config.sparse_mode = 3;
  config.pse = PseForm::kSlopes;
  config.pse_type = 2;
  config.dropout = DropoutKind::kSeed;
  config.keep_prob = 0.8;
  config.dropout_seed = 6;
  CheckBothDirections(config);
  config.pse = PseForm::kRow;
  config.pse_type = 1;
  config.sparse_mode = 4;
  config.pre_tokens = 9;
  config.next_tokens = 2;
  config.dropout = DropoutKind::kMask;
  CheckBothDirections(config);
}

// ---------------------------------------------------------------------------
// Refusals.

TEST(DropoutRejectTest, DropMaskTogetherWithSeed) {
  FeatureConfig config = Padded(Layout::kBSH, DType::kFloat32);
  config.dropout = DropoutKind::kMask;
  config.keep_prob = 0.8;
  FeatureCase c(config);
  core::ForwardArgs args = c.forward_args();
  args.options.seed = 1;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "seed"));
  core::BackwardArgs grad = c.backward_args(nullptr);
  grad.options.seed = 1;
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "seed"));
}

TEST(DropoutRejectTest, KeepProbBelowOneWithNeitherMaskNorSeed) {
  FeatureCase c(Padded(Layout::kBSH, DType::kFloat32));
  core::ForwardArgs args = c.forward_args();
  args.options.keep_prob = 0.9;
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "keep_prob"));
  core::BackwardArgs grad = c.backward_args(nullptr);
  grad.options.keep_prob = 0.9;
  EXPECT_TRUE(IsInvalidOn(core::PlanBackward(grad).status(), "keep_prob"));
}

TEST(DropoutRejectTest, DropMaskTooShortOrNotUint8) {
  FeatureConfig config = Padded(Layout::kBSH, DType::kFloat32);
  config.dropout = DropoutKind::kMask;
  config.keep_prob = 0.8;
  config.drop_mask_extra_bytes = 0;
  FeatureCase c(config);
  const int64_t bytes = static_cast<int64_t>((c.total_drop_bits() + 7) / 8);
  const core::HostTensor short_mask =
      core::MakeHostTensor(DType::kUInt8, {bytes - 1});
  core::ForwardArgs args = c.forward_args();
  args.options.drop_mask = short_mask.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "drop_mask"));
  const core::HostTensor bools = core::MakeHostTensor(DType::kBool, {bytes});
  args.options.drop_mask = bools.view();
  EXPECT_TRUE(IsInvalidOn(core::PlanForward(args).status(), "drop_mask"));
}

}  // namespace
}  // namespace attnserve::test
