#include "kernels/kernel_args.h"

#include "runtime/bf16_gemm.h"
#include "runtime/bf16_tiles.h"

namespace attnserve::core {

void KvRows::Load(const HeadTensor& key, const HeadTensor& value, int64_t b,
                  int64_t n2, const BatchSpan& span, int64_t row0,
                  int64_t rows) const {
  const HeadSlice ks = key.Slice(b, n2, span.kv_start);
  const HeadSlice vs = value.Slice(b, n2, span.kv_start);
  if (kb == nullptr) {
    LoadRows(key.data, ks, row0, rows, k + row0 * ks.cols);
    LoadRows(value.data, vs, row0, rows, v + row0 * vs.cols);
    return;
  }
  CopyBf16Rows(key.data, ks, row0, rows, kb + row0 * ks.cols);
  CopyBf16Rows(value.data, vs, row0, rows, vb + row0 * vs.cols);
  const int64_t end = row0 + rows, padded = RoundUpToGranule(end);
  ZeroBf16Rows(kb, ks.cols, end, padded, ks.cols);
  ZeroBf16Rows(vb, vs.cols, end, padded, vs.cols);
}

}  // namespace attnserve::core
