// The sparse-mode requests shared by sparse_mode_test (FLOAT32) and
// sparse_mode_grid_test (FLOAT16, BFLOAT16): every mode 0-8 with its mask
// forms, negative pre/next, prefix, both Sq < Skv and Sq > Skv, padded
// layouts and TND with zero-length batches, GQA throughout.
#ifndef ATTNSERVE_TESTS_CORE_SPARSE_MODE_CASES_H_
#define ATTNSERVE_TESTS_CORE_SPARSE_MODE_CASES_H_

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/feature_case.h"

namespace attnserve::test::sparse_cases {

struct ModeCase {
  std::string name;
  FeatureConfig config;
};

// B=2, N1=4, N2=2 (GQA), D=Dv=40.
inline FeatureConfig Padded(core::Layout layout, int64_t mode, int64_t s1 = 37,
                            int64_t s2 = 53) {
  FeatureConfig c;
  c.layout = layout;
  c.sparse_mode = mode;
  c.b = 2;
  c.n1 = 4;
  c.n2 = 2;
  c.s1 = s1;
  c.s2 = s2;
  c.d = 40;
  c.dv = 40;
  c.seed = static_cast<uint64_t>(100 + mode * 10 + s1 + s2);
  return c;
}

// TND, N1=6, N2=2 (GQA), D=40 >= Dv=24.
inline FeatureConfig Varlen(int64_t mode, std::vector<int64_t> sq,
                            std::vector<int64_t> skv) {
  FeatureConfig c;
  c.layout = core::Layout::kTND;
  c.sparse_mode = mode;
  c.n1 = 6;
  c.n2 = 2;
  c.d = 40;
  c.dv = 24;
  c.seq_q = std::move(sq);
  c.seq_kv = std::move(skv);
  c.seed = static_cast<uint64_t>(500 + mode);
  return c;
}

inline std::vector<ModeCase> ModeCases() {
  using core::Layout;
  std::vector<ModeCase> v;
  auto add = [&v](std::string name, FeatureConfig c) {
    v.push_back(ModeCase{std::move(name), std::move(c)});
  };
  {
    FeatureConfig c = Padded(Layout::kBSH, 0);
    c.mask = MaskForm::kPerHead;
    c.pre_tokens = 10;
    c.next_tokens = 5;
    add("Mode0BandWithPerHeadMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBNSD, 0);
    c.pre_tokens = 12;
    c.next_tokens = -3;
    add("Mode0NegativeNextNoMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kSBH, 0, 53, 37);
    c.mask = MaskForm::kFull2D;
    c.mask_dtype = core::DType::kBool;
    c.pre_tokens = -4;
    c.next_tokens = 15;
    add("Mode0NegativePreMask2D", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBSND, 1);
    c.mask = MaskForm::kPerBatch;
    c.pre_tokens = 3;  // Ignored by mode 1.
    c.next_tokens = 2;
    add("Mode1PerBatchMaskIgnoresBand", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBNSD, 1);
    c.mask = MaskForm::kShared;
    add("Mode1SharedMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kSBH, 1, 53, 37);
    c.mask = MaskForm::kPerHead;
    add("Mode1PerHeadMaskQueriesLonger", c);
  }
  add("Mode2", Padded(Layout::kBSH, 2));
  {
    FeatureConfig c = Padded(Layout::kBNSD, 2, 53, 37);
    c.mask = MaskForm::kCompressed;
    c.mask_dtype = core::DType::kBool;
    add("Mode2QueriesLongerCompressedMask", c);
  }
  add("Mode3KeysLonger", Padded(Layout::kBSND, 3));
  {
    // Rows i < Sq - Skv keep nothing: the invalid-line result.
    FeatureConfig c = Padded(Layout::kSBH, 3, 53, 37);
    c.mask = MaskForm::kCompressed;
    add("Mode3QueriesLongerCompressedMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBNSD, 4);
    c.pre_tokens = 8;
    c.next_tokens = 3;
    add("Mode4Band", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBSH, 4);
    c.pre_tokens = 10;
    c.next_tokens = -2;
    c.mask = MaskForm::kCompressed;
    add("Mode4NegativeNextCompressedMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kSBH, 4, 53, 37);
    c.pre_tokens = -2;
    c.next_tokens = 9;
    add("Mode4NegativePreQueriesLonger", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBSND, 5);
    c.mask = MaskForm::kPerBatch;
    c.prefix = {20, 40};  // In [Skv - Sq, Skv] = [16, 53].
    add("Mode5PrefixPerBatchMask", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBNSD, 5, 53, 37);
    c.mask = MaskForm::kPerHead;
    c.prefix = {0, 30};  // Sq > Skv: in [0, Skv].
    add("Mode5PrefixPerHeadMaskQueriesLonger", c);
  }
  {
    FeatureConfig c = Padded(Layout::kBSH, 6);
    c.prefix = {16, 45};
    add("Mode6Prefix", c);
  }
  {
    FeatureConfig c = Padded(Layout::kSBH, 6, 53, 37);
    c.prefix = {5, 37};
    c.mask = MaskForm::kCompressed;
    add("Mode6PrefixQueriesLongerCompressedMask", c);
  }
  {
    FeatureConfig c = Varlen(0, {20, 0, 31}, {25, 13, 40});
    c.pre_tokens = 7;
    c.next_tokens = 2;
    c.mask = MaskForm::kTndMax;
    add("TndMode0BandMaxMask", c);
  }
  {
    FeatureConfig c = Varlen(1, {20, 9, 31}, {25, 0, 17});
    c.mask = MaskForm::kTndPacked;
    add("TndMode1PackedMask", c);
  }
  add("TndMode2", Varlen(2, {20, 31, 9}, {25, 17, 40}));
  {
    FeatureConfig c = Varlen(3, {20, 0, 31}, {25, 13, 40});
    c.mask = MaskForm::kCompressed;
    add("TndMode3CompressedMask", c);
  }
  {
    FeatureConfig c = Varlen(4, {20, 31}, {25, 40});
    c.pre_tokens = 6;
    c.next_tokens = 1;
    add("TndMode4", c);
  }
  {
    FeatureConfig c = Varlen(6, {20, 31}, {25, 40});
    c.prefix = {10, 20};
    add("TndMode6Prefix", c);
  }
  {
    // Band batch: the last with Sq_b != 0 (b = 1): Sq−Skv = −9 <= next <= 0.
    FeatureConfig c = Varlen(7, {20, 31, 0}, {25, 40, 13});
    c.pre_tokens = 40;
    c.next_tokens = -4;
    add("TndMode7BandOnLastNonEmptyBatch", c);
  }
  {
    FeatureConfig c = Varlen(7, {20, 31, 0}, {25, 40, 13});
    c.pre_tokens = 40;
    c.next_tokens = 0;
    c.mask = MaskForm::kCompressed;
    add("TndMode7CompressedMask", c);
  }
  {
    // Band batch: the first with Sq_b != 0 (b = 1): next >= 23 − 30.
    FeatureConfig c = Varlen(8, {0, 23, 17}, {9, 30, 17});
    c.pre_tokens = 30;
    c.next_tokens = -3;
    add("TndMode8BandOnFirstNonEmptyBatch", c);
  }
  {
    FeatureConfig c = Varlen(8, {0, 23, 17}, {9, 30, 17});
    c.pre_tokens = 30;
    c.next_tokens = 5;
    c.mask = MaskForm::kCompressed;
    add("TndMode8PositiveNextCompressedMask", c);
  }
  return v;
}

using ModeParam = std::tuple<size_t, core::DType>;

inline std::string ModeParamName(
    const ::testing::TestParamInfo<ModeParam>& info) {
  return absl::StrCat(ModeCases()[std::get<0>(info.param)].name, "_",
                      core::DTypeName(std::get<1>(info.param)));
}

inline std::vector<size_t> ModeCaseIndices() {
  std::vector<size_t> v(ModeCases().size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

}  // namespace attnserve::test::sparse_cases

#endif  // ATTNSERVE_TESTS_CORE_SPARSE_MODE_CASES_H_
