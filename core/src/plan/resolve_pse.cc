// pse, pse_type and the ALiBi start indices (docs/semantics.md, "pse").
#include <string>

#include "absl/strings/str_cat.h"
#include "attnserve/core/status_macros.h"
#include "plan/checks.h"
#include "plan/resolve.h"

namespace attnserve::core {
namespace {

constexpr int64_t kCompressedRows = 1024;

// The masks the 1024-row ALiBi form may be used with.
bool IsCausalForCompressedPse(const AttentionOptions& o) {
  return o.sparse_mode == 2 || o.sparse_mode == 3 ||
         (o.sparse_mode == 0 && o.next_tokens == 0);
}

absl::Status CheckSlopes(const TensorView& pse, const AttentionDims& dims,
                         const std::vector<BatchSpan>& batches, PseSpec* spec) {
  if (pse.dtype != DType::kFloat32) {
    return InvalidField("pse.dtype", absl::StrCat("pse_type ", spec->pse_type,
                                                  " takes FLOAT32 slopes, got ",
                                                  DTypeName(pse.dtype)));
  }
  const std::vector<int64_t> per_batch{dims.b, dims.n1}, shared{dims.n1};
  if (pse.shape != per_batch && pse.shape != shared) {
    return InvalidField(
        "pse.shape",
        absl::StrCat("pse_type ", spec->pse_type, " takes slopes [B,N1] = ",
                     ShapeString(per_batch), " or [N1] = ", ShapeString(shared),
                     ", got ", ShapeString(pse.shape)));
  }
  for (size_t b = 0; b < batches.size(); ++b) {
    if (batches[b].s1 != batches[b].s2) {
      return InvalidField(
          "pse_type",
          absl::StrCat("pse_type ", spec->pse_type,
                       " (generated ALiBi) needs Sq == Skv",
                       dims.layout == Layout::kTND
                           ? absl::StrCat(" in every batch; batch ", b, " has ",
                                          batches[b].s1, " and ", batches[b].s2)
                           : absl::StrCat(", got ", batches[b].s1, " and ",
                                          batches[b].s2)));
    }
  }
  spec->kind =
      spec->pse_type == 2 ? PseSpec::Kind::kAlibi : PseSpec::Kind::kAlibiSqrt;
  spec->stride_b = pse.rank() == 2 ? dims.n1 : 0;
  return absl::OkStatus();
}

absl::Status CheckExternal(const TensorView& pse, const AttentionOptions& o,
                           const AttentionDims& dims,
                           const std::vector<BatchSpan>& batches,
                           PseSpec* spec) {
  const bool fp8 = !IsFloatingCompute(dims.dtype);
  if (fp8 ? !IsFloatingCompute(pse.dtype) : pse.dtype != dims.dtype) {
    return InvalidField(
        "pse.dtype",
        absl::StrCat(fp8 ? "must be FLOAT32, FLOAT16 or BFLOAT16"
                         : absl::StrCat("must equal the query's dtype ",
                                        DTypeName(dims.dtype)),
                     ", got ", DTypeName(pse.dtype)));
  }
  const bool tnd = dims.layout == Layout::kTND;
  const int64_t b = dims.b, n = dims.n1, sq = dims.s1, skv = dims.s2;
  const std::string forms =
      tnd ? absl::StrCat(
                "TND takes the ALiBi-compressed [B,N1,1024,maxSkv] "
                "or [1,N1,1024,maxSkv] = ",
                ShapeString({b, n, kCompressedRows, skv}), " / ",
                ShapeString({1, n, kCompressedRows, skv}))
          : absl::StrCat(
                "must be [B,N1,Sq,Skv], [1,N1,Sq,Skv], [B,N1,1,Skv], "
                "or (Sq > 1024, causal) [B,N1,1024,Skv] / "
                "[1,N1,1024,Skv] = ",
                ShapeString({b, n, sq, skv}), ", ",
                ShapeString({1, n, sq, skv}), ", ", ShapeString({b, n, 1, skv}),
                ", ", ShapeString({b, n, kCompressedRows, skv}));
  const bool rank_ok = pse.rank() == 4 &&
                       (pse.dim(0) == b || pse.dim(0) == 1) &&
                       pse.dim(1) == n && pse.dim(3) == skv;
  if (!rank_ok) {
    return InvalidField("pse.shape",
                        absl::StrCat(forms, ", got ", ShapeString(pse.shape)));
  }
  const int64_t rows = pse.dim(2);
  if (!tnd && rows == sq) {
    spec->rows = PseSpec::Rows::kFull;
  } else if (!tnd && rows == 1 && pse.dim(0) == b) {
    spec->rows = PseSpec::Rows::kBroadcast;
  } else if (rows == kCompressedRows) {
    spec->rows = PseSpec::Rows::kCompressed;
    for (size_t i = 0; i < batches.size(); ++i) {
      const BatchSpan& s = batches[i];
      if (s.s1 != s.s2 || s.s1 <= kCompressedRows) {
        return InvalidField(
            "pse.shape",
            absl::StrCat(
                "the 1024-row ALiBi-compressed pse needs Sq == Skv > "
                "1024",
                tnd ? absl::StrCat(" in every batch; batch ", i,
                                   " has Sq=", s.s1, ", Skv=", s.s2)
                    : absl::StrCat(", got Sq=", s.s1, ", Skv=", s.s2)));
      }
    }
    if (!IsCausalForCompressedPse(o)) {
      return InvalidField(
          "pse.shape",
          absl::StrCat("the 1024-row ALiBi-compressed pse needs a causal "
                       "mask (sparse_mode 2, 3, or 0 with next_tokens = 0), "
                       "got sparse_mode ",
                       o.sparse_mode, " with next_tokens ", o.next_tokens));
    }
  } else {
    return InvalidField("pse.shape",
                        absl::StrCat(forms, ", got ", ShapeString(pse.shape)));
  }
  spec->kind = PseSpec::Kind::kExternal;
  spec->stride_row = spec->rows == PseSpec::Rows::kBroadcast ? 0 : skv;
  spec->stride_n = rows * skv;
  spec->stride_b = pse.dim(0) == 1 ? 0 : n * rows * skv;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PseSpec> ResolvePse(const AttentionOptions& o,
                                   const AttentionDims& dims,
                                   const std::vector<BatchSpan>& batches,
                                   float scale) {
  PseSpec spec;
  spec.pse_type = o.pse_type;
  spec.coeff = o.pse_type == 1 ? scale : 1.0f;
  spec.q_start = o.q_start_idx.empty() ? 0 : o.q_start_idx[0];
  spec.kv_start = o.kv_start_idx.empty() ? 0 : o.kv_start_idx[0];
  if (!o.pse.has_value()) {
    if (o.pse_type != 1) {
      return InvalidField("pse", absl::StrCat("pse_type=", o.pse_type,
                                              " requires a pse tensor"));
    }
    return spec;
  }
  const TensorView& pse = *o.pse;
  if (o.sparse_mode == 7) {
    return InvalidField("pse", "sparse_mode 7 does not take a pse");
  }
  if (dims.layout == Layout::kTND) {
    for (size_t b = 0; b < batches.size(); ++b) {
      if (batches[b].s1 == 0 || batches[b].s2 == 0) {
        return InvalidField(
            "pse", absl::StrCat("a pse cannot be used when a batch has a zero "
                                "length (batch ",
                                b, ")"));
      }
    }
  }
  ATTN_RETURN_IF_ERROR(CheckByteSize(pse, "pse"));
  spec.dtype = pse.dtype;
  spec.shape = pse.shape;
  if (o.pse_type == 2 || o.pse_type == 3) {
    ATTN_RETURN_IF_ERROR(CheckSlopes(pse, dims, batches, &spec));
  } else {
    ATTN_RETURN_IF_ERROR(CheckExternal(pse, o, dims, batches, &spec));
  }
  return spec;
}

}  // namespace attnserve::core
