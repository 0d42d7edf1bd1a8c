// The analytic keep(i, j) of each sparse_mode, written on the test side
// straight from the mode table of the conventions (batch-local i, j;
// Δ = Skv_b − Sq_b), independently of the core:
//
//   mode 0: i − pre <= j <= i + next        (and !mask)
//   mode 1: true                             (and !mask)
//   mode 2: j <= i
//   mode 3: j <= i + Δ
//   mode 4: i + Δ − pre <= j <= i + Δ + next
//   mode 5: j <= i + Δ  or  j < prefix[b]    (and !mask)
//   mode 6: j <= i + Δ  or  j < prefix[b]
//   mode 7: band batch (last with Sq_b != 0): j <= i + Δ_b + next;
//           others j <= i + Δ_b
//   mode 8: band batch (first with Sq_b != 0): j <= i + Δ_b + next;
//           others j <= i
//
//   SparseSpec spec{/*mode=*/3, pre, next, /*prefix=*/{}, {37, 37}, {53, 53}};
//   bool keep = SparseKeep(spec, /*b=*/1, /*i=*/4, /*j=*/20);  // j <= 4+16
//
// The mask tensor part (!mask of modes 0, 1, 5) is not included: callers
// combine it. Pure and thread-safe; aborts on an unknown mode (a test bug).
#ifndef ATTNSERVE_TESTS_TESTING_SPARSE_PREDICATE_H_
#define ATTNSERVE_TESTS_TESTING_SPARSE_PREDICATE_H_

#include <cstdint>
#include <vector>

namespace attnserve::test {

struct SparseSpec {
  int64_t mode = 0;
  int64_t pre_tokens = 2147483647;
  int64_t next_tokens = 2147483647;
  std::vector<int64_t> prefix;  // Per batch (modes 5 and 6).
  std::vector<int64_t> sq;      // Query length of each batch.
  std::vector<int64_t> skv;     // Key length of each batch.
};

// The analytic part of keep(i, j) for batch b.
bool SparseKeep(const SparseSpec& spec, int64_t b, int64_t i, int64_t j);

// True for the modes whose predicate also requires !mask (0, 1 and 5) when a
// full or broadcast mask tensor is sent.
bool ModeReadsMaskTensor(int64_t mode);

// Modes 7 and 8: the batch that carries next_tokens (-1 if every Sq_b is 0).
int64_t BandBatch(const SparseSpec& spec);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_SPARSE_PREDICATE_H_
