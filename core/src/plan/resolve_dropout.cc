// keep_prob, drop_mask and the seed of the generated mask (docs/semantics.md,
// "Dropout").
#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "plan/checks.h"
#include "plan/resolve.h"

namespace attnserve::core {

absl::StatusOr<DropoutSpec> ResolveDropout(
    const AttentionOptions& o, const AttentionDims& dims,
    const std::vector<BatchSpan>& batches) {
  DropoutSpec spec;
  spec.keep_prob = static_cast<float>(o.keep_prob);
  // Bit index of (b, 0, 0, 0): padded ((b*N1+n)*Sq+i)*Skv+j, TND
  // N1*sum(Sq_b'*Skv_b') + (n*Sq_b+i)*Skv_b+j.
  int64_t bits = 0;
  for (const BatchSpan& s : batches) {
    spec.bit_base.push_back(bits);
    bits += dims.n1 * s.s1 * s.s2;
  }
  if (o.drop_mask.has_value()) {
    const TensorView& m = *o.drop_mask;
    if (o.seed.has_value()) {
      return InvalidField("seed",
                          "give either a drop_mask or a seed for a generated "
                          "mask, not both");
    }
    if (m.dtype != DType::kUInt8) {
      return InvalidField(
          "drop_mask.dtype",
          absl::StrCat("must be UINT8 (bit-packed, LSB first, 1 = keep), got ",
                       DTypeName(m.dtype)));
    }
    ATTN_RETURN_IF_ERROR(CheckByteSize(m, "drop_mask"));
    const int64_t need = (bits + 7) / 8;
    if (static_cast<int64_t>(m.size_bytes) < need) {
      return InvalidField(
          "drop_mask.shape",
          absl::StrCat("must hold at least ceil(", bits, " / 8) = ", need,
                       " bytes (one bit per score cell), got ",
                       ShapeString(m.shape)));
    }
    spec.kind = DropoutSpec::Kind::kMask;
    return spec;
  }
  if (o.keep_prob >= 1.0) return spec;
  if (!o.seed.has_value()) {
    return InvalidField(
        "keep_prob",
        absl::StrCat("keep_prob=", o.keep_prob,
                     " < 1 needs a drop_mask or a seed (with optional offset) "
                     "for a server-generated mask"));
  }
  spec.kind = DropoutSpec::Kind::kSeed;
  spec.seed = *o.seed;
  spec.offset = o.offset.value_or(0);
  return spec;
}

}  // namespace attnserve::core
