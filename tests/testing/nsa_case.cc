#include "tests/testing/nsa_case.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attnserve/core/cancel.h"
#include "attnserve/core/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testing/compare.h"
#include "tests/testing/tensors.h"

namespace attnserve::test {
namespace {

// K distinct blocks out of [0, blocks), in random order.
std::vector<int32_t> DistinctBlocks(int64_t blocks, int64_t k,
                                    std::mt19937_64& gen) {
  std::vector<int32_t> all(static_cast<size_t>(blocks));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), gen);
  all.resize(static_cast<size_t>(k));
  return all;
}

std::vector<int32_t> MakeTopk(const NsaCaseConfig& c, std::mt19937_64& gen) {
  const int64_t k = c.block_count, bs = c.block_size;
  std::vector<int32_t> topk;
  std::vector<int32_t> shared;
  for (size_t b = 0; b < c.seq_q.size(); ++b) {
    const int64_t blocks = c.seq_kv[b] / bs;
    if (shared.empty()) shared = DistinctBlocks(blocks, k, gen);
    for (int64_t i = 0; i < c.seq_q[b]; ++i) {
      for (int64_t n2 = 0; n2 < c.n2; ++n2) {
        std::vector<int32_t> row = DistinctBlocks(blocks, k, gen);
        switch (c.pattern) {
          case NsaIndexPattern::kDistinct:
            break;
          case NsaIndexPattern::kDuplicates:
            if (k >= 3) {
              row[1] = row[0];
              row[static_cast<size_t>(k - 1)] = row[1];
            }
            break;
          case NsaIndexPattern::kLocal: {
            const int64_t own = std::min(i / bs, blocks - 1);
            if (i % 5 == 0 && blocks - own - 1 >= k) {
              std::vector<int32_t> later(static_cast<size_t>(blocks - own - 1));
              std::iota(later.begin(), later.end(),
                        static_cast<int32_t>(own + 1));
              std::shuffle(later.begin(), later.end(), gen);
              later.resize(static_cast<size_t>(k));
              row = later;
            } else {
              // Put the own block first, keeping the others distinct.
              auto it = std::find(row.begin(), row.end(), own);
              if (it == row.end()) {
                row[0] = static_cast<int32_t>(own);
              } else {
                std::iter_swap(row.begin(), it);
              }
            }
            break;
          }
          case NsaIndexPattern::kShared:
            row = shared;
            // The same blocks must exist in every batch.
            for (int32_t& x : row) x %= static_cast<int32_t>(blocks);
            break;
        }
        topk.insert(topk.end(), row.begin(), row.end());
      }
    }
  }
  return topk;
}

std::vector<double> Lanes(const std::vector<double>& rows) {
  std::vector<double> lanes;
  lanes.reserve(rows.size() * 8);
  for (double x : rows) lanes.insert(lanes.end(), 8, x);
  return lanes;
}

// Every lane of a [rows][8] statistic: fully masked rows exactly
// `masked_value`, others within rel_tol of max|ref| (or of the entry).
::testing::AssertionResult StatMatches(const std::string& what,
                                       const std::vector<double>& got,
                                       const std::vector<double>& ref,
                                       const std::vector<bool>& fully_masked,
                                       double masked_value, double rel_tol,
                                       bool elementwise) {
  if (got.size() != ref.size() * 8) {
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " values, expected "
           << ref.size() * 8;
  }
  double max_ref = 0;
  for (size_t r = 0; r < ref.size(); ++r) {
    if (!fully_masked[r]) max_ref = std::max(max_ref, std::fabs(ref[r]));
  }
  for (size_t r = 0; r < ref.size(); ++r) {
    for (size_t lane = 0; lane < 8; ++lane) {
      const double g = got[r * 8 + lane];
      if (fully_masked[r]) {
        if (g != masked_value) {
          return ::testing::AssertionFailure()
                 << what << " row " << r << " lane " << lane
                 << " of a fully masked row is " << g << ", expected "
                 << masked_value;
        }
        continue;
      }
      const double limit =
          rel_tol * (elementwise ? std::fabs(ref[r]) : max_ref);
      if (!(std::fabs(g - ref[r]) <= limit)) {
        return ::testing::AssertionFailure()
               << what << " row " << r << " lane " << lane << " is " << g
               << ", reference " << ref[r] << " (limit " << limit << ")";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

std::string NsaIndexPatternName(NsaIndexPattern pattern) {
  switch (pattern) {
    case NsaIndexPattern::kDistinct:
      return "Distinct";
    case NsaIndexPattern::kDuplicates:
      return "Duplicates";
    case NsaIndexPattern::kLocal:
      return "Local";
    case NsaIndexPattern::kShared:
      return "Shared";
  }
  return "?";
}

std::string NsaCaseName(const NsaCaseConfig& c) {
  return absl::StrCat(core::DTypeName(c.dtype), "_n", c.n1, "x", c.n2, "_d",
                      c.d, "x", c.dv, "_mode", c.sparse_mode, "_",
                      NsaIndexPatternName(c.pattern));
}

std::vector<int64_t> Cumulative(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> ends(lengths.size());
  std::partial_sum(lengths.begin(), lengths.end(), ends.begin());
  return ends;
}

core::HostTensor PackInt32(const std::vector<int32_t>& values,
                           std::vector<int64_t> shape) {
  core::HostTensor t;
  t.dtype = core::DType::kInt32;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(int32_t));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

core::HostTensor CausalMask2048(core::DType dtype) {
  constexpr int64_t kSide = 2048;
  std::vector<uint8_t> cells(static_cast<size_t>(kSide * kSide));
  for (int64_t i = 0; i < kSide; ++i) {
    for (int64_t j = i + 1; j < kSide; ++j) {
      cells[static_cast<size_t>(i * kSide + j)] = 1;
    }
  }
  return PackBytes(cells, {kSide, kSide}, dtype);
}

NsaCase::NsaCase(const NsaCaseConfig& config) : config_(config) {
  const NsaCaseConfig& c = config_;
  scale_ = static_cast<float>(c.scale.has_value()
                                  ? *c.scale
                                  : 1.0 / std::sqrt(static_cast<double>(c.d)));
  NsaRefProblem& p = problem_;
  p.seq_q = c.seq_q;
  p.seq_kv = c.seq_kv;
  p.n1 = c.n1;
  p.n2 = c.n2;
  p.d = c.d;
  p.dv = c.dv;
  p.block_size = c.block_size;
  p.block_count = c.block_count;
  p.causal = c.sparse_mode == 2;
  p.scale = scale_;
  const int64_t t1 = p.t1(), t2 = p.t2();
  const uint64_t s = c.seed * 8;
  const auto n = [](int64_t x) { return static_cast<size_t>(x); };
  p.q = RoundToDType(
      RandomUniform(n(t1 * c.n1 * c.d), s + 1, -c.qk_range, c.qk_range),
      c.dtype);
  p.k = RoundToDType(
      RandomUniform(n(t2 * c.n2 * c.d), s + 2, -c.qk_range, c.qk_range),
      c.dtype);
  p.v = RoundToDType(
      RandomUniform(n(t2 * c.n2 * c.dv), s + 3, -c.v_range, c.v_range),
      c.dtype);
  dy_ = RoundToDType(
      RandomUniform(n(t1 * c.n1 * c.dv), s + 4, -c.v_range, c.v_range),
      c.dtype);
  std::mt19937_64 gen(s + 5);
  p.topk = MakeTopk(c, gen);

  q_ = PackFlat(p.q, {t1, c.n1, c.d}, c.dtype);
  k_ = PackFlat(p.k, {t2, c.n2, c.d}, c.dtype);
  v_ = PackFlat(p.v, {t2, c.n2, c.dv}, c.dtype);
  dy_tensor_ = PackFlat(dy_, {t1, c.n1, c.dv}, c.dtype);
  topk_ = PackInt32(p.topk, {t1, c.n2, c.block_count});
  if (c.send_mask) mask_ = CausalMask2048();

  ref_forward_ = NsaReferenceForward(p);
  ref_backward_ = NsaReferenceBackward(p, dy_);
  ref_max_ = PackFlat(Lanes(ref_forward_.softmax_max), {t1, c.n1, 8},
                      core::DType::kFloat32);
  ref_sum_ = PackFlat(Lanes(ref_forward_.softmax_sum), {t1, c.n1, 8},
                      core::DType::kFloat32);
  ref_out_ = PackFlat(ref_forward_.out, {t1, c.n1, c.dv}, c.dtype);
}

core::NsaOptions NsaCase::options() const {
  core::NsaOptions o;
  if (mask_.has_value()) o.atten_mask = mask_->view();
  o.actual_seq_qlen = Cumulative(config_.seq_q);
  o.actual_seq_kvlen = Cumulative(config_.seq_kv);
  o.scale_value = static_cast<double>(scale_);
  o.selected_block_size = config_.block_size;
  o.selected_block_count = config_.block_count;
  o.head_num = config_.n1;
  o.input_layout = "TND";
  o.sparse_mode = config_.sparse_mode;
  return o;
}

core::NsaForwardArgs NsaCase::forward_args() const {
  core::NsaForwardArgs args;
  args.query = q_.view();
  args.key = k_.view();
  args.value = v_.view();
  args.topk_indices = topk_.view();
  args.options = options();
  return args;
}

core::NsaBackwardArgs NsaCase::backward_args(
    const core::ForwardResult& fwd) const {
  core::NsaBackwardArgs args;
  args.query = q_.view();
  args.key = k_.view();
  args.value = v_.view();
  args.attention_out = fwd.attention_out.view();
  args.attention_out_grad = dy_tensor_.view();
  args.softmax_max = fwd.softmax_max.view();
  args.softmax_sum = fwd.softmax_sum.view();
  args.topk_indices = topk_.view();
  args.options = options();
  return args;
}

core::NsaBackwardArgs NsaCase::backward_args_with_reference_residuals() const {
  core::NsaBackwardArgs args;
  args.query = q_.view();
  args.key = k_.view();
  args.value = v_.view();
  args.attention_out = ref_out_.view();
  args.attention_out_grad = dy_tensor_.view();
  args.softmax_max = ref_max_.view();
  args.softmax_sum = ref_sum_.view();
  args.topk_indices = topk_.view();
  args.options = options();
  return args;
}

absl::StatusOr<core::ForwardResult> RunNsaForward(
    const core::NsaForwardArgs& args, int threads) {
  ATTN_ASSIGN_OR_RETURN(core::NsaForwardCall call,
                        core::NsaForwardCall::Prepare(args, threads));
  core::EngineOptions options;
  options.intra_op_threads = threads;
  core::Engine engine(options);
  core::CancelToken token;
  return engine.Run(call, token);
}

absl::StatusOr<core::BackwardResult> RunNsaBackward(
    const core::NsaBackwardArgs& args, int threads) {
  ATTN_ASSIGN_OR_RETURN(core::NsaBackwardCall call,
                        core::NsaBackwardCall::Prepare(args, threads));
  core::EngineOptions options;
  options.intra_op_threads = threads;
  core::Engine engine(options);
  core::CancelToken token;
  return engine.Run(call, token);
}

void ExpectNsaForwardMatches(const NsaCase& c, const core::ForwardResult& got,
                             const Tolerances& tol) {
  const NsaCaseConfig& cfg = c.config();
  const NsaRefForward& ref = c.reference_forward();
  absl::StatusOr<std::vector<double>> out =
      UnpackFlat(got.attention_out, {c.t1(), cfg.n1, cfg.dv}, cfg.dtype);
  ASSERT_TRUE(out.ok()) << "attention_out: " << out.status();
  EXPECT_TRUE(AllClose("attention_out", *out, ref.out, tol.out,
                       {c.t1(), cfg.n1, cfg.dv}, ref.fully_masked));
  const std::vector<int64_t> stat_shape = {c.t1(), cfg.n1, 8};
  absl::StatusOr<std::vector<double>> max =
      UnpackFlat(got.softmax_max, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(max.ok()) << "softmax_max: " << max.status();
  absl::StatusOr<std::vector<double>> sum =
      UnpackFlat(got.softmax_sum, stat_shape, core::DType::kFloat32);
  ASSERT_TRUE(sum.ok()) << "softmax_sum: " << sum.status();
  EXPECT_TRUE(StatMatches("softmax_max", *max, ref.softmax_max,
                          ref.fully_masked, -static_cast<double>(FLT_MAX),
                          tol.softmax_max, /*elementwise=*/false));
  EXPECT_TRUE(StatMatches("softmax_sum", *sum, ref.softmax_sum,
                          ref.fully_masked, static_cast<double>(FLT_MAX),
                          tol.softmax_sum, /*elementwise=*/true));
}

void ExpectNsaBackwardMatches(const NsaCase& c, const core::BackwardResult& got,
                              const Tolerances& tol) {
  const NsaCaseConfig& cfg = c.config();
  const NsaRefBackward& ref = c.reference_backward();
  absl::StatusOr<std::vector<double>> dq =
      UnpackFlat(got.dq, {c.t1(), cfg.n1, cfg.d}, cfg.dtype);
  ASSERT_TRUE(dq.ok()) << "dq: " << dq.status();
  absl::StatusOr<std::vector<double>> dk =
      UnpackFlat(got.dk, {c.t2(), cfg.n2, cfg.d}, cfg.dtype);
  ASSERT_TRUE(dk.ok()) << "dk: " << dk.status();
  absl::StatusOr<std::vector<double>> dv =
      UnpackFlat(got.dv, {c.t2(), cfg.n2, cfg.dv}, cfg.dtype);
  ASSERT_TRUE(dv.ok()) << "dv: " << dv.status();
  EXPECT_FALSE(got.dpse.has_value());
  EXPECT_TRUE(AllClose("dq", *dq, ref.dq, tol.grad, {c.t1(), cfg.n1, cfg.d},
                       c.reference_forward().fully_masked));
  EXPECT_TRUE(AllClose("dk", *dk, ref.dk, tol.grad, {c.t2(), cfg.n2, cfg.d},
                       ref.unused_keys));
  EXPECT_TRUE(AllClose("dv", *dv, ref.dv, tol.grad, {c.t2(), cfg.n2, cfg.dv},
                       ref.unused_keys));
}

}  // namespace attnserve::test
