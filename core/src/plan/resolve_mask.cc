// sparse_mode, pre/next_tokens, prefix and atten_mask (docs/semantics.md,
// "Masks and sparse modes"):
// every mode becomes a per-batch band plus, for modes 0, 1 and 5, an
// explicit mask tensor.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "plan/checks.h"
#include "plan/resolve.h"

namespace attnserve::core {
namespace {

constexpr int64_t kCompressedSide = 2048;
constexpr int64_t kPrefixCompressedRows = 3072;
constexpr int64_t kUnbounded = BatchBand::kUnbounded;

bool ReadsMaskTensor(int64_t mode) {
  return mode == 0 || mode == 1 || mode == 5;
}

// Index of the batch whose band modes 7 (last) and 8 (first) widen.
int64_t BandBatch(const std::vector<BatchSpan>& batches, int64_t mode) {
  const int64_t n = static_cast<int64_t>(batches.size());
  if (mode == 7) {
    for (int64_t b = n - 1; b >= 0; --b) {
      if (batches[static_cast<size_t>(b)].s1 != 0) return b;
    }
  } else {
    for (int64_t b = 0; b < n; ++b) {
      if (batches[static_cast<size_t>(b)].s1 != 0) return b;
    }
  }
  return -1;
}

// pre_tokens / next_tokens clamped to [-kUnbounded, kUnbounded]. Every
// |j - i| of a batch is below 2^21, so the band's cells are the same, and
// every sum of a window and a sequence length stays far from overflow
// (INT64_MIN / INT64_MAX are valid "unbounded" values on the wire).
int64_t Window(int64_t tokens) {
  return std::clamp(tokens, -kUnbounded, kUnbounded);
}

// next < 0 needs pre >= -next; pre < 0 needs next >= -pre.
absl::Status CheckBandSigns(const AttentionOptions& o) {
  const int64_t pre = Window(o.pre_tokens), next = Window(o.next_tokens);
  if (next < 0 && pre < -next) {
    return InvalidField(
        "pre_tokens",
        absl::StrCat("with next_tokens=", o.next_tokens,
                     " < 0, pre_tokens must be >= -next_tokens (the band is "
                     "empty otherwise), got ",
                     o.pre_tokens));
  }
  if (pre < 0 && next < -pre) {
    return InvalidField(
        "next_tokens",
        absl::StrCat("with pre_tokens=", o.pre_tokens,
                     " < 0, next_tokens must be >= -pre_tokens (the band is "
                     "empty otherwise), got ",
                     o.next_tokens));
  }
  return absl::OkStatus();
}

// Mode 0's top-left band must reach the matrix at all.
absl::Status CheckBandReachesMatrix(const AttentionOptions& o,
                                    const AttentionDims& dims) {
  if (o.next_tokens < -(dims.s1 - 1)) {
    return InvalidField(
        "next_tokens",
        absl::StrCat("must be >= -(Sq-1)=", -(dims.s1 - 1),
                     " or the band is empty, got ", o.next_tokens));
  }
  if (o.pre_tokens < -(dims.s2 - 1)) {
    return InvalidField(
        "pre_tokens",
        absl::StrCat("must be >= -(Skv-1)=", -(dims.s2 - 1),
                     " or the band is empty, got ", o.pre_tokens));
  }
  return absl::OkStatus();
}

absl::Status CheckModeAndLayout(const AttentionOptions& o,
                                const AttentionDims& dims,
                                const std::vector<BatchSpan>& batches) {
  const int64_t mode = o.sparse_mode;
  const bool tnd = dims.layout == Layout::kTND;
  if ((mode == 7 || mode == 8) && !tnd) {
    return InvalidField("sparse_mode",
                        absl::StrCat("sparse_mode ", mode,
                                     " is only supported with input_layout "
                                     "TND"));
  }
  if (mode == 5 && tnd) {
    return InvalidField("sparse_mode",
                        "sparse_mode 5 (prefix) is not supported with TND; use "
                        "sparse_mode 6 (compressed prefix)");
  }
  if (mode == 3 && tnd) {
    for (size_t b = 0; b < batches.size(); ++b) {
      if (batches[b].s1 > batches[b].s2) {
        return InvalidField(
            absl::StrCat("actual_seq_kvlen[", b, "]"),
            absl::StrCat("sparse_mode 3 in TND needs Sq <= Skv in every "
                         "batch; batch ",
                         b, " has Sq=", batches[b].s1,
                         " > Skv=", batches[b].s2));
      }
    }
  }
  if (mode == 7 || mode == 8) {
    const BatchSpan& band =
        batches[static_cast<size_t>(BandBatch(batches, mode))];
    if (o.pre_tokens < band.s2) {
      return InvalidField(
          "pre_tokens",
          absl::StrCat("sparse_mode ", mode,
                       " needs pre_tokens >= Skv of the band batch (", band.s2,
                       "), got ", o.pre_tokens));
    }
    if (o.next_tokens < band.s1 - band.s2) {
      return InvalidField(
          "next_tokens",
          absl::StrCat("sparse_mode ", mode,
                       " needs next_tokens >= Sq - Skv of the band batch (",
                       band.s1 - band.s2, "), got ", o.next_tokens));
    }
    if (mode == 7 && o.next_tokens > 0) {
      return InvalidField(
          "next_tokens",
          absl::StrCat("sparse_mode 7 needs next_tokens <= 0, got ",
                       o.next_tokens));
    }
  }
  if (mode == 0 || mode == 4) ATTN_RETURN_IF_ERROR(CheckBandSigns(o));
  if (mode == 0 && !tnd) ATTN_RETURN_IF_ERROR(CheckBandReachesMatrix(o, dims));
  return absl::OkStatus();
}

absl::Status CheckPrefix(const AttentionOptions& o, const AttentionDims& dims,
                         const std::vector<BatchSpan>& batches) {
  const bool wants = o.sparse_mode == 5 || o.sparse_mode == 6;
  if (!wants) {
    if (!o.prefix.empty()) {
      return InvalidField("prefix",
                          absl::StrCat("is only used with sparse_mode 5 or 6, "
                                       "got sparse_mode ",
                                       o.sparse_mode));
    }
    return absl::OkStatus();
  }
  if (static_cast<int64_t>(o.prefix.size()) != dims.b) {
    return InvalidField("prefix",
                        absl::StrCat("sparse_mode ", o.sparse_mode,
                                     " needs one prefix per batch (B=", dims.b,
                                     "), got ", o.prefix.size()));
  }
  if (dims.layout != Layout::kTND && dims.b > kMaxBatchWithPrefix) {
    return InvalidField("prefix",
                        absl::StrCat("with prefix, B must be <= ",
                                     kMaxBatchWithPrefix, ", got ", dims.b));
  }
  for (size_t b = 0; b < batches.size(); ++b) {
    const int64_t sq = batches[b].s1, skv = batches[b].s2;
    const int64_t lo = sq > skv ? 0 : skv - sq;
    if (o.prefix[b] < lo || o.prefix[b] > skv) {
      return InvalidField(
          absl::StrCat("prefix[", b, "]"),
          absl::StrCat("must be in [", lo, ", ", skv, "] (",
                       sq > skv ? "[0, Skv] when Sq > Skv"
                                : "[Skv-Sq, Skv] when Sq <= Skv",
                       "), got ", o.prefix[b]));
    }
  }
  return absl::OkStatus();
}

// A compressed mask must hold exactly the standard contents.
absl::Status CheckCompressedMask(const TensorView& m, int64_t mode) {
  const int64_t rows = mode == 6 ? kPrefixCompressedRows : kCompressedSide;
  const std::vector<int64_t> want{rows, kCompressedSide};
  if (m.shape != want) {
    return InvalidField(
        "atten_mask.shape",
        absl::StrCat("sparse_mode ", mode, " takes the compressed mask ",
                     ShapeString(want), " (or no mask), got ",
                     ShapeString(m.shape)));
  }
  const auto* p = static_cast<const uint8_t*>(m.data);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kCompressedSide; ++j) {
      const bool masked = p[i * kCompressedSide + j] != 0;
      const bool want_masked =
          i < kCompressedSide ? j > i : j >= kCompressedSide / 2;
      if (masked != want_masked) {
        return InvalidField(
            "atten_mask",
            absl::StrCat("sparse_mode ", mode,
                         " takes the standard compressed mask (1 strictly "
                         "above the diagonal",
                         mode == 6 ? ", then [zeros(1024,1024) | "
                                     "ones(1024,1024)]"
                                   : "",
                         "); element [", i, ",", j, "] is ", masked ? 1 : 0,
                         ". Send another mask with sparse_mode 0 or 1"));
      }
    }
  }
  return absl::OkStatus();
}

// Explicit masks of modes 0, 1 and 5: strides and per-batch bases.
absl::Status ResolveMaskTensor(const TensorView& m, int64_t mode,
                               const AttentionDims& dims,
                               const std::vector<BatchSpan>& batches,
                               MaskSpec* spec) {
  spec->has_tensor = true;
  spec->stride_j = 1;
  if (dims.layout == Layout::kTND) {
    const std::vector<int64_t> max_form{dims.s1, dims.s2};
    const std::vector<int64_t> token_form{dims.t1, dims.t2};
    if (m.shape != max_form && m.shape != token_form) {
      return InvalidField(
          "atten_mask.shape",
          absl::StrCat("TND takes [maxSq, maxSkv] = ", ShapeString(max_form),
                       " or [T1, T2] = ", ShapeString(token_form), ", got ",
                       ShapeString(m.shape)));
    }
    const bool tokens = m.shape == token_form && m.shape != max_form;
    spec->stride_i = m.dim(1);
    for (size_t b = 0; b < batches.size(); ++b) {
      spec->bands[b].mask_base =
          tokens ? batches[b].q_start * dims.t2 + batches[b].kv_start : 0;
    }
    return absl::OkStatus();
  }
  const int64_t b = dims.b, n = dims.n1, sq = dims.s1, skv = dims.s2;
  spec->stride_i = skv;
  int64_t stride_b = 0;
  bool ok = false;
  if (mode == 5) {
    ok = m.rank() == 4 && m.dim(0) == b && (m.dim(1) == n || m.dim(1) == 1) &&
         m.dim(2) == sq && m.dim(3) == skv;
  } else if (m.shape == std::vector<int64_t>{sq, skv}) {
    ok = true;
  } else {
    ok = m.rank() == 4 && m.dim(2) == sq && m.dim(3) == skv &&
         ((m.dim(0) == b && m.dim(1) == n) ||
          (m.dim(0) == b && m.dim(1) == 1) || (m.dim(0) == 1 && m.dim(1) == 1));
  }
  if (!ok) {
    const std::string allowed =
        mode == 5
            ? absl::StrCat("sparse_mode 5 takes [B,N1,Sq,Skv] = ",
                           ShapeString({b, n, sq, skv}),
                           " or [B,1,Sq,Skv] = ", ShapeString({b, 1, sq, skv}))
            : absl::StrCat(
                  "must be [B,N1,Sq,Skv], [B,1,Sq,Skv], [1,1,Sq,Skv] or "
                  "[Sq,Skv] = ",
                  ShapeString({b, n, sq, skv}), ", ",
                  ShapeString({b, 1, sq, skv}), ", ",
                  ShapeString({1, 1, sq, skv}), " or ", ShapeString({sq, skv}));
    return InvalidField("atten_mask.shape",
                        absl::StrCat(allowed, ", got ", ShapeString(m.shape)));
  }
  if (m.rank() == 4) {
    spec->stride_n = m.dim(1) == 1 ? 0 : sq * skv;
    stride_b = m.dim(0) == 1 ? 0 : m.dim(1) * sq * skv;
  }
  for (int64_t i = 0; i < b; ++i) {
    spec->bands[static_cast<size_t>(i)].mask_base = i * stride_b;
  }
  return absl::OkStatus();
}

// The band of `mode` for one batch.
BatchBand BandOf(const AttentionOptions& o, int64_t mode, const BatchSpan& s,
                 bool band_batch, int64_t prefix) {
  BatchBand band;
  const int64_t delta = s.s2 - s.s1;
  const int64_t pre = Window(o.pre_tokens), next = Window(o.next_tokens);
  switch (mode) {
    case 0:
      band.lo = -pre;
      band.hi = next;
      break;
    case 1:
      break;
    case 2:
      band.hi = 0;
      break;
    case 3:
      band.hi = delta;
      break;
    case 4:
      band.lo = delta - pre;
      band.hi = delta + next;
      break;
    case 5:
    case 6:
      band.hi = delta;
      band.prefix = prefix;
      break;
    case 7:
      band.hi = band_batch ? delta + next : delta;
      break;
    case 8:
      band.hi = band_batch ? delta + next : 0;
      break;
    default:
      break;
  }
  band.lo = std::max(band.lo, -kUnbounded);
  band.hi = std::min(band.hi, kUnbounded);
  return band;
}

}  // namespace

absl::StatusOr<MaskSpec> ResolveMask(const AttentionOptions& o,
                                     const AttentionDims& dims,
                                     const std::vector<BatchSpan>& batches) {
  const int64_t mode = o.sparse_mode;
  ATTN_RETURN_IF_ERROR(CheckModeAndLayout(o, dims, batches));
  ATTN_RETURN_IF_ERROR(CheckPrefix(o, dims, batches));

  MaskSpec spec;
  spec.sparse_mode = mode;
  const int64_t band_batch =
      (mode == 7 || mode == 8) ? BandBatch(batches, mode) : -1;
  for (size_t b = 0; b < batches.size(); ++b) {
    spec.bands.push_back(BandOf(o, mode, batches[b],
                                static_cast<int64_t>(b) == band_batch,
                                o.prefix.empty() ? 0 : o.prefix[b]));
  }

  if (!o.atten_mask.has_value()) {
    if (mode == 1 || mode == 5) {
      return InvalidField(
          "atten_mask",
          absl::StrCat("sparse_mode ", mode, " requires an atten_mask"));
    }
    return spec;
  }
  const TensorView& m = *o.atten_mask;
  if (m.dtype != DType::kBool && m.dtype != DType::kUInt8) {
    return InvalidField("atten_mask.dtype",
                        absl::StrCat("must be BOOL or UINT8 (1 = masked), got ",
                                     DTypeName(m.dtype)));
  }
  ATTN_RETURN_IF_ERROR(CheckByteSize(m, "atten_mask"));
  if (!ReadsMaskTensor(mode)) {
    ATTN_RETURN_IF_ERROR(CheckCompressedMask(m, mode));
    return spec;
  }
  ATTN_RETURN_IF_ERROR(ResolveMaskTensor(m, mode, dims, batches, &spec));
  return spec;
}

}  // namespace attnserve::core
