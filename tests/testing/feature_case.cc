#include "tests/testing/feature_case.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/compare.h"
#include "tests/testing/float8.h"
#include "tests/testing/philox.h"

namespace attnserve::test {
namespace {

void CaseCheck(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "feature_case: %s\n", what);
    std::abort();
  }
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t x : shape) n *= x;
  return n;
}

// Values as the kernel will decode them from `dtype`.
std::vector<double> RoundValues(const std::vector<double>& values,
                                core::DType dtype) {
  if (IsFloat8(dtype)) return RoundToFloat8(values, dtype);
  return RoundToDType(values, dtype);
}

core::HostTensor PackValues(const std::vector<double>& values,
                            std::vector<int64_t> shape, core::DType dtype) {
  if (IsFloat8(dtype)) return PackFloat8(values, std::move(shape), dtype);
  return PackFlat(values, std::move(shape), dtype);
}

// Seeds of the random streams: one per (batch, tensor).
uint64_t StreamSeed(uint64_t seed, int64_t b, int tensor) {
  return seed * 1000003u + static_cast<uint64_t>(b) * 64u +
         static_cast<uint64_t>(tensor);
}

// Checks every lane of a [rows][8] statistic: rows flagged `exact` must hold
// the reference value exactly, others be within rel_tol of the entry
// (elementwise) or of the largest non-exact |ref|.
::testing::AssertionResult StatLanesMatch(const std::string& what,
                                          const std::vector<double>& got,
                                          const std::vector<double>& ref,
                                          const std::vector<bool>& exact,
                                          double rel_tol, bool elementwise,
                                          const std::vector<int64_t>& dims) {
  if (got.size() != ref.size() * 8) {
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " values, expected "
           << ref.size() * 8;
  }
  double max_ref = 0;
  for (size_t r = 0; r < ref.size(); ++r) {
    if (!exact[r]) max_ref = std::max(max_ref, std::fabs(ref[r]));
  }
  std::vector<int64_t> lane_dims = dims;
  lane_dims.push_back(8);
  for (size_t r = 0; r < ref.size(); ++r) {
    for (size_t lane = 0; lane < 8; ++lane) {
      const double g = got[r * 8 + lane];
      if (exact[r]) {
        if (g != ref[r]) {
          return ::testing::AssertionFailure()
                 << what << FormatIndex(r * 8 + lane, lane_dims) << " is " << g
                 << ", expected exactly " << ref[r];
        }
        continue;
      }
      const double limit =
          rel_tol * (elementwise ? std::fabs(ref[r]) : max_ref);
      if (!(std::fabs(g - ref[r]) <= limit)) {
        return ::testing::AssertionFailure()
               << what << FormatIndex(r * 8 + lane, lane_dims) << " is " << g
               << ", reference " << ref[r] << ": |diff| "
               << std::fabs(g - ref[r]) << " > " << limit;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

std::string DropoutName(const FeatureConfig& c) {
  switch (c.dropout) {
    case DropoutKind::kNone:
      return "NoDrop";
    case DropoutKind::kMask:
      return "DropMask";
    case DropoutKind::kSeed:
      return "DropSeed";
  }
  return "?";
}

}  // namespace

std::string MaskFormName(MaskForm form) {
  switch (form) {
    case MaskForm::kNone:
      return "MaskNone";
    case MaskForm::kFull2D:
      return "Mask2D";
    case MaskForm::kShared:
      return "Mask11SS";
    case MaskForm::kPerBatch:
      return "MaskB1SS";
    case MaskForm::kPerHead:
      return "MaskBNSS";
    case MaskForm::kCompressed:
      return "MaskCompressed";
    case MaskForm::kTndMax:
      return "MaskMaxSS";
    case MaskForm::kTndPacked:
      return "MaskT1T2";
  }
  return "?";
}

std::vector<uint8_t> StandardCompressedMask(bool prefix_form) {
  constexpr int64_t kSide = 2048, kHalf = 1024;
  const int64_t rows = prefix_form ? kSide + kHalf : kSide;
  std::vector<uint8_t> m(static_cast<size_t>(rows * kSide));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kSide; ++j) {
      m[static_cast<size_t>(i * kSide + j)] =
          i < kSide ? (j > i ? 1 : 0) : (j >= kHalf ? 1 : 0);
    }
  }
  return m;
}

std::string FeatureCaseName(const FeatureConfig& c) {
  std::string name =
      absl::StrCat(core::LayoutName(c.layout), "_", core::DTypeName(c.dtype),
                   "_n", c.n1, "x", c.n2, "_mode", c.sparse_mode, "_",
                   MaskFormName(c.mask), "_", PseFormName(c.pse));
  if (c.pse != PseForm::kNone) absl::StrAppend(&name, "_type", c.pse_type);
  absl::StrAppend(&name, "_", DropoutName(c));
  return name;
}

Tolerances FeatureTolerances(const FeatureConfig& config) {
  return TolerancesFor(IsFloat8(config.dtype) ? core::DType::kFloat32
                                              : config.dtype);
}

FeatureCase::FeatureCase(const FeatureConfig& config) : config_(config) {
  const FeatureConfig& c = config_;
  CaseCheck(c.n1 > 0 && c.n2 > 0 && c.n1 % c.n2 == 0, "n2 must divide n1");
  CaseCheck(c.d > 0 && c.dv > 0, "head dims must be positive");
  scale_ = static_cast<float>(c.scale.has_value()
                                  ? *c.scale
                                  : 1.0 / std::sqrt(static_cast<double>(c.d)));
  keep_prob_ = static_cast<float>(c.keep_prob);
  if (tnd()) {
    CaseCheck(!c.seq_q.empty() && c.seq_q.size() == c.seq_kv.size(),
              "TND needs seq_q and seq_kv of equal, non-zero length");
    sq_ = c.seq_q;
    skv_ = c.seq_kv;
  } else {
    CaseCheck(c.b > 0 && c.s1 > 0 && c.s2 > 0, "padded dims must be positive");
    sq_.assign(static_cast<size_t>(c.b), c.s1);
    skv_.assign(static_cast<size_t>(c.b), c.s2);
  }
  cu_q_.assign(1, 0);
  cu_kv_.assign(1, 0);
  for (size_t b = 0; b < sq_.size(); ++b) {
    cu_q_.push_back(cu_q_.back() + sq_[b]);
    cu_kv_.push_back(cu_kv_.back() + skv_[b]);
  }
  sparse_ = SparseSpec{c.sparse_mode, c.pre_tokens, c.next_tokens,
                       c.prefix,      sq_,          skv_};

  const size_t nb = sq_.size();
  q_.resize(nb);
  k_.resize(nb);
  v_.resize(nb);
  dy_.resize(nb);
  for (size_t bi = 0; bi < nb; ++bi) {
    const int64_t b = static_cast<int64_t>(bi);
    const size_t nq = static_cast<size_t>(c.n1 * sq_[bi]);
    const size_t nk = static_cast<size_t>(c.n2 * skv_[bi]);
    q_[bi] = RoundValues(
        RandomUniform(nq * static_cast<size_t>(c.d), StreamSeed(c.seed, b, 1),
                      -c.qk_range, c.qk_range),
        c.dtype);
    k_[bi] = RoundValues(
        RandomUniform(nk * static_cast<size_t>(c.d), StreamSeed(c.seed, b, 2),
                      -c.qk_range, c.qk_range),
        c.dtype);
    v_[bi] = RoundValues(
        RandomUniform(nk * static_cast<size_t>(c.dv), StreamSeed(c.seed, b, 3),
                      -c.v_range, c.v_range),
        c.dtype);
    dy_[bi] = RoundValues(
        RandomUniform(nq * static_cast<size_t>(c.dv), StreamSeed(c.seed, b, 4),
                      -c.v_range, c.v_range),
        c.dtype);
  }
  q_tensor_ = PackTensor(q_, c.n1, c.d, true, c.dtype);
  k_tensor_ = PackTensor(k_, c.n2, c.d, false, c.dtype);
  v_tensor_ = PackTensor(v_, c.n2, c.dv, false, c.dtype);
  dy_tensor_ = PackTensor(dy_, c.n1, c.dv, true, c.dtype);

  MakeMask();
  MakeDropout();
  MakePse();

  ref_forward_.resize(nb);
  ref_out_rounded_.resize(nb);
  std::vector<double> stat_max(static_cast<size_t>(t1() * c.n1), 0.0);
  std::vector<double> stat_sum(stat_max.size(), 0.0);
  for (size_t bi = 0; bi < nb; ++bi) {
    const int64_t b = static_cast<int64_t>(bi);
    ref_out_rounded_[bi].assign(static_cast<size_t>(c.n1 * sq_[bi] * c.dv),
                                0.0);
    if (sq_[bi] == 0 || skv_[bi] == 0) continue;
    ref_forward_[bi] = ReferenceForward(BatchProblem(b));
    ref_out_rounded_[bi] = RoundValues(ref_forward_[bi].out, c.dtype);
    for (int64_t n = 0; n < c.n1; ++n) {
      for (int64_t i = 0; i < sq_[bi]; ++i) {
        const size_t local = static_cast<size_t>(n * sq_[bi] + i);
        stat_max[QRow(b, n, i)] = ref_forward_[bi].softmax_max[local];
        stat_sum[QRow(b, n, i)] = ref_forward_[bi].softmax_sum[local];
      }
    }
  }
  auto lanes = [](const std::vector<double>& rows) {
    std::vector<double> out;
    out.reserve(rows.size() * 8);
    for (double x : rows) out.insert(out.end(), 8, x);
    return out;
  };
  ref_max_ = PackFlat(lanes(stat_max), StatShape(), core::DType::kFloat32);
  ref_sum_ = PackFlat(lanes(stat_sum), StatShape(), core::DType::kFloat32);
  ref_out_ = PackTensor(ref_out_rounded_, c.n1, c.dv, true, c.dtype);
  Expect(nullptr, &expected_);
}

std::vector<double> FeatureCase::Concat(
    const std::vector<std::vector<double>>& v) const {
  std::vector<double> out;
  for (const std::vector<double>& part : v) {
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

size_t FeatureCase::QRow(int64_t b, int64_t n, int64_t i) const {
  if (tnd()) return static_cast<size_t>((q_start(b) + i) * config_.n1 + n);
  return static_cast<size_t>((b * config_.n1 + n) * config_.s1 + i);
}

size_t FeatureCase::KvRow(int64_t b, int64_t n2, int64_t j) const {
  if (tnd()) return static_cast<size_t>((kv_start(b) + j) * config_.n2 + n2);
  return static_cast<size_t>((b * config_.n2 + n2) * config_.s2 + j);
}

std::vector<int64_t> FeatureCase::TensorShape(int64_t heads, int64_t dim,
                                              bool query_side) const {
  if (tnd()) return {query_side ? t1() : t2(), heads, dim};
  return LayoutShape(
      config_.layout,
      Bnsd{batches(), heads, query_side ? config_.s1 : config_.s2, dim});
}

std::vector<int64_t> FeatureCase::StatShape() const {
  if (tnd()) return {t1(), config_.n1, 8};
  return {batches(), config_.n1, config_.s1, 8};
}

core::HostTensor FeatureCase::PackTensor(
    const std::vector<std::vector<double>>& per_batch, int64_t heads,
    int64_t dim, bool query_side, core::DType dtype) const {
  const std::vector<int64_t> shape = TensorShape(heads, dim, query_side);
  std::vector<double> values(static_cast<size_t>(NumElements(shape)), 0.0);
  const Bnsd padded{batches(), heads, query_side ? config_.s1 : config_.s2,
                    dim};
  for (int64_t b = 0; b < batches(); ++b) {
    const int64_t len = query_side ? sq(b) : skv(b);
    const int64_t start = query_side ? q_start(b) : kv_start(b);
    const std::vector<double>& src = per_batch[static_cast<size_t>(b)];
    CaseCheck(src.size() == static_cast<size_t>(heads * len * dim),
              "per-batch array size != heads * len * dim");
    for (int64_t n = 0; n < heads; ++n) {
      for (int64_t s = 0; s < len; ++s) {
        for (int64_t x = 0; x < dim; ++x) {
          const int64_t at =
              tnd() ? ((start + s) * heads + n) * dim + x
                    : LayoutOffset(config_.layout, padded, b, n, s, x);
          values[static_cast<size_t>(at)] =
              src[static_cast<size_t>((n * len + s) * dim + x)];
        }
      }
    }
  }
  return PackValues(values, shape, dtype);
}

absl::StatusOr<std::vector<double>> FeatureCase::UnpackTensor(
    const core::HostTensor& tensor, int64_t heads, int64_t dim, bool query_side,
    core::DType dtype) const {
  if (tnd()) {
    return UnpackFlat(tensor, TensorShape(heads, dim, query_side), dtype);
  }
  return UnpackBnsd(
      tensor, Bnsd{batches(), heads, query_side ? config_.s1 : config_.s2, dim},
      config_.layout, dtype);
}

size_t FeatureCase::MaskIndex(int64_t b, int64_t n, int64_t i,
                              int64_t j) const {
  const int64_t s1 = config_.s1, s2 = config_.s2;
  switch (config_.mask) {
    case MaskForm::kFull2D:
    case MaskForm::kShared:
      return static_cast<size_t>(i * s2 + j);
    case MaskForm::kPerBatch:
      return static_cast<size_t>((b * s1 + i) * s2 + j);
    case MaskForm::kPerHead:
      return static_cast<size_t>(((b * config_.n1 + n) * s1 + i) * s2 + j);
    case MaskForm::kTndMax:
      return static_cast<size_t>(i * mask_shape_[1] + j);
    case MaskForm::kTndPacked:
      return static_cast<size_t>((q_start(b) + i) * t2() + kv_start(b) + j);
    case MaskForm::kNone:
    case MaskForm::kCompressed:
      break;
  }
  CaseCheck(false, "MaskIndex of a form without a per-cell mask");
  return 0;
}

bool FeatureCase::MaskedAt(int64_t b, int64_t n, int64_t i, int64_t j) const {
  if (config_.mask == MaskForm::kNone ||
      config_.mask == MaskForm::kCompressed) {
    return false;
  }
  return mask_values_[MaskIndex(b, n, i, j)] != 0;
}

bool FeatureCase::Keep(int64_t b, int64_t n, int64_t i, int64_t j) const {
  if (!SparseKeep(sparse_, b, i, j)) return false;
  return !(ModeReadsMaskTensor(config_.sparse_mode) && MaskedAt(b, n, i, j));
}

void FeatureCase::MakeMask() {
  const FeatureConfig& c = config_;
  switch (c.mask) {
    case MaskForm::kNone:
      return;
    case MaskForm::kCompressed: {
      const bool prefix_form = c.sparse_mode == 6;
      mask_values_ = StandardCompressedMask(prefix_form);
      mask_shape_ = {prefix_form ? 3072 : 2048, 2048};
      mask_tensor_ = PackBytes(mask_values_, mask_shape_, c.mask_dtype);
      return;
    }
    case MaskForm::kFull2D:
      mask_shape_ = {c.s1, c.s2};
      break;
    case MaskForm::kShared:
      mask_shape_ = {1, 1, c.s1, c.s2};
      break;
    case MaskForm::kPerBatch:
      mask_shape_ = {batches(), 1, c.s1, c.s2};
      break;
    case MaskForm::kPerHead:
      mask_shape_ = {batches(), c.n1, c.s1, c.s2};
      break;
    case MaskForm::kTndMax:
      mask_shape_ = {*std::max_element(sq_.begin(), sq_.end()),
                     *std::max_element(skv_.begin(), skv_.end())};
      break;
    case MaskForm::kTndPacked:
      mask_shape_ = {t1(), t2()};
      break;
  }
  const int64_t rows = mask_shape_[mask_shape_.size() - 2];
  const int64_t cols = mask_shape_.back();
  const int64_t planes =
      NumElements(mask_shape_) / std::max<int64_t>(1, rows * cols);
  mask_values_.assign(static_cast<size_t>(NumElements(mask_shape_)), 0);
  std::mt19937_64 gen(c.seed * 8 + 5);
  auto uniform = [&gen] { return static_cast<double>(gen() >> 11) * 0x1p-53; };
  for (uint8_t& x : mask_values_) x = uniform() < c.masked_fraction ? 1 : 0;
  for (int64_t p = 0; p < planes && rows > 0; ++p) {
    for (int r = 0; r < c.fully_masked_rows; ++r) {
      const int64_t i =
          static_cast<int64_t>(gen() % static_cast<uint64_t>(rows));
      for (int64_t j = 0; j < cols; ++j) {
        mask_values_[static_cast<size_t>((p * rows + i) * cols + j)] = 1;
      }
    }
  }
  // A mode-0 mask must agree with its band: every cell outside it is 1.
  if (c.sparse_mode == 0) {
    for (int64_t b = 0; b < batches(); ++b) {
      for (int64_t n = 0; n < c.n1; ++n) {
        for (int64_t i = 0; i < sq(b); ++i) {
          for (int64_t j = 0; j < skv(b); ++j) {
            if (!SparseKeep(sparse_, b, i, j)) {
              mask_values_[MaskIndex(b, n, i, j)] = 1;
            }
          }
        }
      }
    }
  }
  mask_tensor_ = PackBytes(mask_values_, mask_shape_, c.mask_dtype);
}

uint64_t FeatureCase::total_drop_bits() const {
  uint64_t total = 0;
  for (int64_t b = 0; b < batches(); ++b) {
    total += static_cast<uint64_t>(config_.n1 * sq(b) * skv(b));
  }
  return total;
}

uint64_t FeatureCase::DropBit(int64_t b, int64_t n, int64_t i,
                              int64_t j) const {
  const int64_t n1 = config_.n1;
  if (!tnd()) {
    return static_cast<uint64_t>(((b * n1 + n) * config_.s1 + i) * config_.s2 +
                                 j);
  }
  int64_t before = 0;
  for (int64_t x = 0; x < b; ++x) before += sq(x) * skv(x);
  return static_cast<uint64_t>(n1 * before + (n * sq(b) + i) * skv(b) + j);
}

bool FeatureCase::DropKeep(int64_t b, int64_t n, int64_t i, int64_t j) const {
  if (drop_keep_.empty()) return true;
  return drop_keep_[DropBit(b, n, i, j)];
}

std::string FeatureCase::DropKeepBytes() const {
  std::string bytes((total_drop_bits() + 7) / 8, '\0');
  for (uint64_t k = 0; k < drop_keep_.size(); ++k) {
    if (drop_keep_[k]) bytes[k >> 3] |= static_cast<char>(1 << (k & 7));
  }
  return bytes;
}

void FeatureCase::MakeDropout() {
  const FeatureConfig& c = config_;
  const uint64_t total = total_drop_bits();
  if (c.dropout == DropoutKind::kMask) {
    const double fraction =
        c.keep_prob < 1 ? c.keep_prob : c.drop_mask_keep_fraction;
    std::mt19937_64 gen(c.seed * 8 + 6);
    auto uniform = [&gen] {
      return static_cast<double>(gen() >> 11) * 0x1p-53;
    };
    drop_keep_.resize(total);
    for (uint64_t k = 0; k < total; ++k) drop_keep_[k] = uniform() < fraction;
    std::vector<int64_t> shape;
    if (c.drop_mask_shape == DropMaskShape::kPadded4D) {
      CaseCheck(!tnd(), "the 4-D drop_mask shape is for padded layouts");
      shape = {batches(), c.n1, c.s1, (c.s2 + 7) / 8};
    } else {
      shape = {static_cast<int64_t>((total + 7) / 8) + c.drop_mask_extra_bytes};
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(NumElements(shape)));
    CaseCheck(bytes.size() * 8 >= total, "drop_mask shape too small");
    for (uint8_t& x : bytes) x = static_cast<uint8_t>(gen());
    for (uint64_t k = 0; k < total; ++k) {
      const uint8_t bit = static_cast<uint8_t>(1u << (k & 7));
      bytes[k >> 3] = static_cast<uint8_t>(
          drop_keep_[k] ? (bytes[k >> 3] | bit) : (bytes[k >> 3] & ~bit));
    }
    drop_mask_tensor_ = PackBytes(bytes, shape, core::DType::kUInt8);
  } else if (c.dropout == DropoutKind::kSeed && keep_prob_ < 1.0f) {
    drop_keep_.resize(total);
    const uint64_t offset = c.dropout_offset.value_or(0);
    for (uint64_t k = 0; k < total; ++k) {
      drop_keep_[k] = PhiloxKeepBit(c.dropout_seed, offset, k, keep_prob_);
    }
  }
}

void FeatureCase::MakePse() {
  const FeatureConfig& c = config_;
  if (c.pse == PseForm::kNone) return;
  pse_.form = c.pse;
  pse_.pse_type = c.pse_type;
  pse_.b = batches();
  pse_.n1 = c.n1;
  pse_.sq = tnd() ? *std::max_element(sq_.begin(), sq_.end()) : c.s1;
  pse_.skv = tnd() ? *std::max_element(skv_.begin(), skv_.end()) : c.s2;
  pse_.scale = scale_;
  pse_.q_start = c.q_start_idx.empty() ? 0 : c.q_start_idx[0];
  pse_.kv_start = c.kv_start_idx.empty() ? 0 : c.kv_start_idx[0];
  const std::vector<int64_t> shape = PseShape(pse_);
  const size_t count = static_cast<size_t>(NumElements(shape));
  if (IsSlopes(c.pse)) {
    pse_.values =
        RoundToDType(RandomUniform(count, StreamSeed(c.seed, 0, 7), 0.02, 0.3),
                     core::DType::kFloat32);
    pse_tensor_ = PackFlat(pse_.values, shape, core::DType::kFloat32);
    return;
  }
  const core::DType dtype =
      c.pse_dtype.value_or(IsFloat8(c.dtype) ? core::DType::kFloat16 : c.dtype);
  pse_.values = RoundToDType(
      RandomUniform(count, StreamSeed(c.seed, 0, 7), -c.pse_range, c.pse_range),
      dtype);
  pse_tensor_ = PackFlat(pse_.values, shape, dtype);
}

RefProblem FeatureCase::BatchProblem(int64_t b) const {
  const FeatureConfig& c = config_;
  const size_t bi = static_cast<size_t>(b);
  CaseCheck(sq(b) > 0 && skv(b) > 0, "BatchProblem of an empty batch");
  RefProblem p;
  p.dims = RefDims{1, c.n1, c.n2, sq(b), skv(b), c.d, c.dv};
  p.q = q_[bi];
  p.k = k_[bi];
  p.v = v_[bi];
  p.scale = scale_;
  p.keep = [this, b](int64_t, int64_t n, int64_t i, int64_t j) {
    return Keep(b, n, i, j);
  };
  if (pse_.form != PseForm::kNone) {
    const int64_t sq_b = sq(b);
    p.bias = [this, b, sq_b](int64_t, int64_t n, int64_t i, int64_t j) {
      return PseBias(pse_, b, n, i, j, sq_b);
    };
    p.record_ds = true;
  }
  if (has_dropout()) {
    p.dropout = [this, b](int64_t, int64_t n, int64_t i, int64_t j) {
      return DropKeep(b, n, i, j);
    };
    p.keep_prob = keep_prob_;
  }
  return p;
}

void FeatureCase::Expect(const std::vector<std::vector<double>>* attention_in,
                         FeatureExpectation* e) const {
  const FeatureConfig& c = config_;
  const size_t rows = static_cast<size_t>(t1() * c.n1);
  const size_t kv_rows = static_cast<size_t>(t2() * c.n2);
  const size_t d = static_cast<size_t>(c.d), dv = static_cast<size_t>(c.dv);
  e->out.assign(rows * dv, 0.0);
  e->out_zero.assign(rows, false);
  e->stat_max.assign(rows, 0.0);
  e->stat_sum.assign(rows, 0.0);
  e->stat_exact.assign(rows, false);
  e->dq.assign(rows * d, 0.0);
  e->dq_zero.assign(rows, false);
  e->dk.assign(kv_rows * d, 0.0);
  e->dv.assign(kv_rows * dv, 0.0);
  e->kv_zero.assign(kv_rows, false);
  e->dpse.reset();
  if (pse_.form != PseForm::kNone) {
    e->dpse.emplace(static_cast<size_t>(NumElements(PseShape(pse_))));
  }
  for (int64_t b = 0; b < batches(); ++b) {
    const size_t bi = static_cast<size_t>(b);
    const int64_t sq_b = sq(b), skv_b = skv(b);
    if (sq_b == 0) {
      for (int64_t n2 = 0; n2 < c.n2; ++n2) {
        for (int64_t j = 0; j < skv_b; ++j) e->kv_zero[KvRow(b, n2, j)] = true;
      }
      continue;
    }
    if (skv_b == 0) {
      // out 0, softmax_max 0, softmax_sum 0, zero gradients.
      for (int64_t n = 0; n < c.n1; ++n) {
        for (int64_t i = 0; i < sq_b; ++i) {
          const size_t row = QRow(b, n, i);
          e->out_zero[row] = e->stat_exact[row] = e->dq_zero[row] = true;
        }
      }
      continue;
    }
    const RefForward& f = ref_forward_[bi];
    const RefProblem p = BatchProblem(b);
    const RefBackward g =
        attention_in != nullptr
            ? ReferenceBackward(p, dy_[bi], (*attention_in)[bi])
            : ReferenceBackward(p, dy_[bi]);
    for (int64_t n = 0; n < c.n1; ++n) {
      for (int64_t i = 0; i < sq_b; ++i) {
        const size_t local = static_cast<size_t>(n * sq_b + i);
        const size_t row = QRow(b, n, i);
        std::copy_n(&f.out[local * dv], dv, &e->out[row * dv]);
        std::copy_n(&g.dq[local * d], d, &e->dq[row * d]);
        e->stat_max[row] = f.softmax_max[local];
        e->stat_sum[row] = f.softmax_sum[local];
        if (f.fully_masked[local]) {
          e->out_zero[row] = e->stat_exact[row] = e->dq_zero[row] = true;
        }
      }
    }
    for (int64_t n2 = 0; n2 < c.n2; ++n2) {
      for (int64_t j = 0; j < skv_b; ++j) {
        const size_t local = static_cast<size_t>(n2 * skv_b + j);
        const size_t row = KvRow(b, n2, j);
        std::copy_n(&g.dk[local * d], d, &e->dk[row * d]);
        std::copy_n(&g.dv[local * dv], dv, &e->dv[row * dv]);
        e->kv_zero[row] = g.unused_keys[local];
      }
    }
    if (e->dpse.has_value()) {
      for (int64_t n = 0; n < c.n1; ++n) {
        for (int64_t i = 0; i < sq_b; ++i) {
          for (int64_t j = 0; j < skv_b; ++j) {
            if (!Keep(b, n, i, j)) continue;
            const double ds =
                g.ds[static_cast<size_t>((n * sq_b + i) * skv_b + j)];
            AccumulateDpse(pse_, b, n, i, j, sq_b, ds, &*e->dpse);
          }
        }
      }
    }
  }
}

FeatureExpectation FeatureCase::ExpectedWithReferenceResiduals() const {
  FeatureExpectation e;
  Expect(&ref_out_rounded_, &e);
  return e;
}

core::AttentionOptions FeatureCase::options() const {
  const FeatureConfig& c = config_;
  core::AttentionOptions o;
  o.head_num = c.n1;
  o.input_layout = std::string(core::LayoutName(c.layout));
  o.scale_value = static_cast<double>(scale_);
  o.keep_prob = c.keep_prob;
  o.pre_tokens = c.pre_tokens;
  o.next_tokens = c.next_tokens;
  o.sparse_mode = c.sparse_mode;
  o.pse_type = c.pse_type;
  o.prefix = c.prefix;
  o.q_start_idx = c.q_start_idx;
  o.kv_start_idx = c.kv_start_idx;
  if (tnd()) {
    o.actual_seq_qlen.assign(cu_q_.begin() + 1, cu_q_.end());
    o.actual_seq_kvlen.assign(cu_kv_.begin() + 1, cu_kv_.end());
  }
  if (c.dropout == DropoutKind::kSeed) {
    o.seed = c.dropout_seed;
    o.offset = c.dropout_offset;
  }
  if (mask_tensor_.has_value()) o.atten_mask = mask_tensor_->view();
  if (pse_tensor_.has_value()) o.pse = pse_tensor_->view();
  if (drop_mask_tensor_.has_value()) o.drop_mask = drop_mask_tensor_->view();
  return o;
}

core::ForwardArgs FeatureCase::forward_args() const {
  core::ForwardArgs args;
  args.query = q_tensor_.view();
  args.key = k_tensor_.view();
  args.value = v_tensor_.view();
  args.options = options();
  return args;
}

core::BackwardArgs FeatureCase::backward_args(
    const core::ForwardResult* fwd) const {
  core::BackwardArgs args;
  args.query = q_tensor_.view();
  args.key = k_tensor_.view();
  args.value = v_tensor_.view();
  args.dy = dy_tensor_.view();
  if (fwd != nullptr) {
    args.softmax_max = fwd->softmax_max.view();
    args.softmax_sum = fwd->softmax_sum.view();
    args.attention_in = fwd->attention_out.view();
  }
  args.options = options();
  return args;
}

core::BackwardArgs FeatureCase::backward_args_with_reference_residuals() const {
  core::BackwardArgs args = backward_args(nullptr);
  args.softmax_max = ref_max_.view();
  args.softmax_sum = ref_sum_.view();
  args.attention_in = ref_out_.view();
  return args;
}

core::BackwardArgs FeatureCase::backward_args_for(
    Residuals residuals, const core::ForwardResult* fwd) const {
  switch (residuals) {
    case Residuals::kKernelForward:
      CaseCheck(fwd != nullptr, "kKernelForward needs the forward result");
      return backward_args(fwd);
    case Residuals::kReference:
      return backward_args_with_reference_residuals();
    case Residuals::kRecomputed:
      break;
  }
  return backward_args(nullptr);
}

void ExpectForwardMatches(const FeatureCase& c, const core::ForwardResult& got,
                          const Tolerances& tol) {
  const FeatureConfig& cfg = c.config();
  const FeatureExpectation& e = c.expected();
  absl::StatusOr<std::vector<double>> out =
      c.UnpackTensor(got.attention_out, cfg.n1, cfg.dv, true, cfg.dtype);
  ASSERT_TRUE(out.ok()) << "attention_out: " << out.status();
  std::vector<int64_t> out_dims = c.TensorShape(cfg.n1, cfg.dv, true);
  if (!c.tnd()) out_dims = {c.batches(), cfg.n1, cfg.s1, cfg.dv};
  EXPECT_TRUE(
      AllClose("attention_out", *out, e.out, tol.out, out_dims, e.out_zero));
  const std::vector<int64_t> stat_shape = c.StatShape();
  const std::vector<int64_t> row_dims(stat_shape.begin(), stat_shape.end() - 1);
  absl::StatusOr<std::vector<double>> max =
      UnpackFlat(got.softmax_max, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(max.ok()) << "softmax_max: " << max.status();
  absl::StatusOr<std::vector<double>> sum =
      UnpackFlat(got.softmax_sum, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(sum.ok()) << "softmax_sum: " << sum.status();
  EXPECT_TRUE(StatLanesMatch("softmax_max", *max, e.stat_max, e.stat_exact,
                             tol.softmax_max, /*elementwise=*/false, row_dims));
  EXPECT_TRUE(StatLanesMatch("softmax_sum", *sum, e.stat_sum, e.stat_exact,
                             tol.softmax_sum, /*elementwise=*/true, row_dims));
}

::testing::AssertionResult DpseMatches(
    const FeatureCase& c, const std::optional<core::HostTensor>& got,
    const FeatureExpectation& expected, double tol) {
  if (!expected.dpse.has_value()) {
    if (got.has_value()) {
      return ::testing::AssertionFailure() << "dpse returned without a pse";
    }
    return ::testing::AssertionSuccess();
  }
  if (!got.has_value()) {
    return ::testing::AssertionFailure() << "dpse missing although a pse "
                                            "was sent";
  }
  const PseSpec& spec = c.pse();
  const std::vector<int64_t> shape = PseShape(spec);
  const core::DType dtype = c.pse_tensor()->dtype;
  absl::StatusOr<std::vector<double>> values = UnpackFlat(*got, shape, dtype);
  if (!values.ok()) {
    return ::testing::AssertionFailure() << "dpse: " << values.status();
  }
  const DpseSums& ref = *expected.dpse;
  double scale = 0;
  for (double m : ref.magnitude) scale = std::max(scale, m);
  const double limit = tol * (scale > 0 ? scale : 1);
  size_t over = 0, nonzero = 0, worst = 0;
  double worst_err = -1;
  for (size_t e = 0; e < values->size(); ++e) {
    const double g = (*values)[e];
    if (!ref.read[e]) {
      if (g != 0) ++nonzero;
      continue;
    }
    const double err = std::isfinite(g)
                           ? std::fabs(g - ref.dpse[e])
                           : std::numeric_limits<double>::infinity();
    if (err > worst_err) {
      worst_err = err;
      worst = e;
    }
    if (!(err <= limit)) ++over;
  }
  if (over == 0 && nonzero == 0) return ::testing::AssertionSuccess();
  ::testing::AssertionResult r = ::testing::AssertionFailure();
  r << "dpse (" << PseFormName(spec.form) << ", type " << spec.pse_type
    << "): ";
  if (over > 0) {
    r << over << " of " << values->size() << " entries off; worst at "
      << FormatIndex(worst, shape) << " got " << (*values)[worst] << ", ref "
      << ref.dpse[worst] << ", |diff| " << worst_err << " > " << limit
      << " (tol " << tol << " of max sum |share| " << scale << "). ";
  }
  if (nonzero > 0) {
    r << nonzero << " entries no kept cell reads are not exactly 0";
  }
  return r;
}

void ExpectBackwardMatches(const FeatureCase& c,
                           const core::BackwardResult& got,
                           const Tolerances& tol, Residuals residuals) {
  const FeatureConfig& cfg = c.config();
  FeatureExpectation with_residuals;
  const FeatureExpectation* e = &c.expected();
  if (residuals == Residuals::kReference) {
    with_residuals = c.ExpectedWithReferenceResiduals();
    e = &with_residuals;
  }
  const core::DType grad_dtype =
      IsFloat8(cfg.dtype) ? core::DType::kFloat32 : cfg.dtype;
  absl::StatusOr<std::vector<double>> dq =
      c.UnpackTensor(got.dq, cfg.n1, cfg.d, true, grad_dtype);
  ASSERT_TRUE(dq.ok()) << "dq: " << dq.status();
  absl::StatusOr<std::vector<double>> dk =
      c.UnpackTensor(got.dk, cfg.n2, cfg.d, false, grad_dtype);
  ASSERT_TRUE(dk.ok()) << "dk: " << dk.status();
  absl::StatusOr<std::vector<double>> dv =
      c.UnpackTensor(got.dv, cfg.n2, cfg.dv, false, grad_dtype);
  ASSERT_TRUE(dv.ok()) << "dv: " << dv.status();
  auto dims = [&](int64_t heads, int64_t dim, bool query_side) {
    if (c.tnd()) return c.TensorShape(heads, dim, query_side);
    return std::vector<int64_t>{c.batches(), heads,
                                query_side ? cfg.s1 : cfg.s2, dim};
  };
  EXPECT_TRUE(AllClose("dq", *dq, e->dq, tol.grad, dims(cfg.n1, cfg.d, true),
                       e->dq_zero));
  EXPECT_TRUE(AllClose("dk", *dk, e->dk, tol.grad, dims(cfg.n2, cfg.d, false),
                       e->kv_zero));
  EXPECT_TRUE(AllClose("dv", *dv, e->dv, tol.grad, dims(cfg.n2, cfg.dv, false),
                       e->kv_zero));
  double dpse_tol = tol.grad;
  if (c.pse_tensor() != nullptr && !IsSlopes(c.pse().form)) {
    dpse_tol = std::max(dpse_tol, TolerancesFor(c.pse_tensor()->dtype).grad);
  }
  EXPECT_TRUE(DpseMatches(c, got.dpse, *e, dpse_tol));
}

}  // namespace attnserve::test
