#include "tests/testing/sparse_predicate.h"

#include <cstdio>
#include <cstdlib>

namespace attnserve::test {

bool ModeReadsMaskTensor(int64_t mode) {
  return mode == 0 || mode == 1 || mode == 5;
}

int64_t BandBatch(const SparseSpec& spec) {
  const int64_t batches = static_cast<int64_t>(spec.sq.size());
  if (spec.mode == 7) {
    for (int64_t b = batches - 1; b >= 0; --b) {
      if (spec.sq[static_cast<size_t>(b)] != 0) return b;
    }
  } else {
    for (int64_t b = 0; b < batches; ++b) {
      if (spec.sq[static_cast<size_t>(b)] != 0) return b;
    }
  }
  return -1;
}

bool SparseKeep(const SparseSpec& spec, int64_t b, int64_t row, int64_t col) {
  const size_t bb = static_cast<size_t>(b);
  // 128-bit arithmetic: pre/next may be INT64_MIN / INT64_MAX, and the
  // predicate must be exact for them (independently of how the core bounds
  // its own arithmetic).
  using Wide = __int128;
  const Wide delta = Wide{spec.skv.at(bb)} - spec.sq.at(bb);
  const Wide pre = spec.pre_tokens, next = spec.next_tokens;
  const Wide i = row, j = col;
  switch (spec.mode) {
    case 0:
      return i - pre <= j && j <= i + next;
    case 1:
      return true;
    case 2:
      return j <= i;
    case 3:
      return j <= i + delta;
    case 4:
      return i + delta - pre <= j && j <= i + delta + next;
    case 5:
    case 6:
      return j <= i + delta || j < spec.prefix.at(bb);
    case 7:
      return b == BandBatch(spec) ? j <= i + delta + next : j <= i + delta;
    case 8:
      return b == BandBatch(spec) ? j <= i + delta + next : j <= i;
    default:
      std::fprintf(stderr, "sparse_predicate: unknown mode %lld\n",
                   static_cast<long long>(spec.mode));
      std::abort();
  }
}

}  // namespace attnserve::test
