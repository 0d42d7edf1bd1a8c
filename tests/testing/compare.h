// Closeness of kernel outputs to the float64 reference.
//
// The error measure is the largest absolute difference relative to the
// largest reference magnitude, max|got - ref| / max|ref|, so one tolerance
// fits a whole tensor whatever its scale (entries near zero are not judged
// by their own tiny magnitude). Besides the tolerance:
//   - a NaN or infinity in `got` where `ref` is finite always fails;
//   - rows flagged in `zero_rows` (a fully masked query row, a key no query
//     attends to) must be exactly 0. Only such structural zeros are exact:
//     a reference value that is 0 by cancellation (dS of a row that keeps a
//     single key) is judged by the tolerance like any other.
//
//   EXPECT_TRUE(AllClose("dq", got_dq, ref.dq, 3e-3, {B, N1, S1, D},
//                        fwd.fully_masked));
//
// Pure and thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_COMPARE_H_
#define ATTNSERVE_TESTS_TESTING_COMPARE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace attnserve::test {

struct ErrorStats {
  double max_abs_err = 0;  // max |got - ref| over finite reference entries.
  double max_abs_ref = 0;  // max |ref| over finite reference entries.
  size_t worst = 0;        // Index of max_abs_err.
  // max_abs_err / max_abs_ref (max_abs_err when the reference is all zero).
  double rel() const {
    return max_abs_ref > 0 ? max_abs_err / max_abs_ref : max_abs_err;
  }
};

// The error of `got` against `ref` (same size; non-finite `got` entries
// count as an infinite error).
ErrorStats MeasureError(const std::vector<double>& got,
                        const std::vector<double>& ref);

// Success when sizes match, the relative error is <= rel_tol, no value is
// NaN/inf where the reference is finite, and every row flagged in
// `zero_rows` is exactly zero in `got` (rows split `got` into
// zero_rows.size() equal parts; empty: no row flagged). On failure the
// message names `what`, the worst entry (as a multi-index over `dims` when
// given) and the count of offending entries.
::testing::AssertionResult AllClose(const std::string& what,
                                    const std::vector<double>& got,
                                    const std::vector<double>& ref,
                                    double rel_tol,
                                    const std::vector<int64_t>& dims = {},
                                    const std::vector<bool>& zero_rows = {});

// "[i0,i1,...]": the multi-index of flat `index` in a row-major `dims` array
// (just the flat index when `dims` is empty).
std::string FormatIndex(size_t index, const std::vector<int64_t>& dims);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_COMPARE_H_
