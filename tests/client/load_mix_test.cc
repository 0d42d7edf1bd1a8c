#include <cstdint>
#include <string>
#include <vector>

#include "attnctl/attention_requests.h"
#include "attnload/mix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve::attnload {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(LoadMixTest, TokensOverrideTheDefaults) {
  attnctl::Workload defaults;
  defaults.sq = defaults.skv = 128;
  const MixCase c =
      ParseMixCase("bwd:bf16:TND:b3:n8:kv2:s384:d64:mode3", defaults).value();
  EXPECT_EQ(c.spec, "bwd:bf16:TND:b3:n8:kv2:s384:d64:mode3");
  EXPECT_EQ(c.op, MixOp::kBackward);
  EXPECT_EQ(MixOpRpc(c.op), "FlashAttentionScoreGrad");
  const attnctl::Workload& w = c.workload;
  EXPECT_EQ(w.dtype, v1::DATA_TYPE_BFLOAT16);
  EXPECT_EQ(w.layout, "TND");
  EXPECT_EQ(w.batch, 3);
  EXPECT_EQ(w.heads, 8);
  EXPECT_EQ(w.head_num, 8);
  EXPECT_EQ(w.kv_heads, 2);
  EXPECT_EQ(w.sq, 384);
  EXPECT_EQ(w.skv, 384);
  EXPECT_EQ(w.head_dim, 64);
  EXPECT_EQ(w.value_dim, 64);
  EXPECT_DOUBLE_EQ(w.scale, 0.125);
  EXPECT_EQ(w.sparse_mode, 3);
  EXPECT_FALSE(w.causal_mask);
}

TEST(LoadMixTest, KeyValueHeadsAndValueDimFollowUnlessGiven) {
  const MixCase nsa =
      ParseMixCase("nsa-fwd:n16:kv1:sq256:skv512:d192:dv128:bs64:bc4:seed7",
                   attnctl::Workload())
          .value();
  EXPECT_EQ(nsa.op, MixOp::kNsaForward);
  EXPECT_EQ(nsa.workload.heads, 16);
  EXPECT_EQ(nsa.workload.kv_heads, 1);
  EXPECT_EQ(nsa.workload.sq, 256);
  EXPECT_EQ(nsa.workload.skv, 512);
  EXPECT_EQ(nsa.workload.value_dim, 128);
  EXPECT_EQ(nsa.workload.block_size, 64);
  EXPECT_EQ(nsa.workload.block_count, 4);
  EXPECT_EQ(nsa.workload.seed, 7u);
  const MixCase fwd =
      ParseMixCase("fwd:n4:causal", attnctl::Workload()).value();
  EXPECT_EQ(fwd.workload.kv_heads, 4);
  EXPECT_TRUE(fwd.workload.causal_mask);
  EXPECT_EQ(ParseMixCase("nsa-bwd", attnctl::Workload()).value().op,
            MixOp::kNsaBackward);
}

TEST(LoadMixTest, RefusesWhatItDoesNotKnow) {
  const attnctl::Workload w;
  EXPECT_THAT(ParseMixCase("sideways", w).status().message(),
              HasSubstr("operator \"sideways\""));
  EXPECT_THAT(ParseMixCase("fwd:fp64", w).status().message(),
              HasSubstr("unknown token \"fp64\""));
  EXPECT_THAT(ParseMixCase("fwd:s", w).status().message(),
              HasSubstr("unknown token \"s\""));
  EXPECT_THAT(ParseMixCase("fwd:d0", w).status().message(),
              HasSubstr("--d: must be positive"));
}

TEST(LoadMixTest, TndBatchesDecreaseToAboutHalf) {
  EXPECT_THAT(attnctl::TndLengths(64, 3), ElementsAre(64, 54, 44));
  EXPECT_THAT(attnctl::TndLengths(100, 1), ElementsAre(100));
  EXPECT_THAT(attnctl::LayoutShape("TND", 3, 4, 64, 32).value(),
              ElementsAre(162, 4, 32));
}

TEST(LoadMixTest, TndForwardCarriesItsSequenceLengths) {
  attnctl::Workload w;
  w.layout = "TND";
  w.batch = 2;
  w.heads = w.head_num = w.kv_heads = 2;
  w.sq = 16;
  w.skv = 32;
  w.head_dim = 8;
  const v1::FlashAttentionScoreRequest r =
      attnctl::MakeForwardRequest(w).value();
  EXPECT_THAT(r.actual_seq_qlen(), ElementsAre(16, 28));
  EXPECT_THAT(r.actual_seq_kvlen(), ElementsAre(32, 56));
  EXPECT_THAT(r.query().shape(), ElementsAre(28, 2, 8));
  EXPECT_THAT(r.key().shape(), ElementsAre(56, 2, 8));
}

}  // namespace
}  // namespace attnserve::attnload
