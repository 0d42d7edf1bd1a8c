#include "tests/testing/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnserve::test {

ErrorStats MeasureError(const std::vector<double>& got,
                        const std::vector<double>& ref) {
  ErrorStats stats;
  const size_t n = std::min(got.size(), ref.size());
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(ref[i])) continue;
    stats.max_abs_ref = std::max(stats.max_abs_ref, std::fabs(ref[i]));
    const double err = std::isfinite(got[i])
                           ? std::fabs(got[i] - ref[i])
                           : std::numeric_limits<double>::infinity();
    if (err > stats.max_abs_err) {
      stats.max_abs_err = err;
      stats.worst = i;
    }
  }
  return stats;
}

std::string FormatIndex(size_t index, const std::vector<int64_t>& dims) {
  if (dims.empty()) return absl::StrCat("[", index, "]");
  std::vector<int64_t> idx(dims.size());
  size_t rest = index;
  for (size_t k = dims.size(); k-- > 0;) {
    const size_t extent = static_cast<size_t>(dims[k]);
    idx[k] = static_cast<int64_t>(rest % extent);
    rest /= extent;
  }
  return absl::StrCat("[", absl::StrJoin(idx, ","), "]");
}

::testing::AssertionResult AllClose(const std::string& what,
                                    const std::vector<double>& got,
                                    const std::vector<double>& ref,
                                    double rel_tol,
                                    const std::vector<int64_t>& dims,
                                    const std::vector<bool>& zero_rows) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure() << what << ": size " << got.size()
                                         << " != reference size " << ref.size();
  }
  if (!zero_rows.empty() && got.size() % zero_rows.size() != 0) {
    return ::testing::AssertionFailure()
           << what << ": " << zero_rows.size() << " zero-row flags do not "
           << "divide " << got.size() << " entries";
  }
  const size_t row_len = zero_rows.empty() ? 1 : got.size() / zero_rows.size();
  const ErrorStats stats = MeasureError(got, ref);
  const double limit =
      rel_tol * (stats.max_abs_ref > 0 ? stats.max_abs_ref : 1);
  size_t over = 0, nonzero = 0;
  size_t first_nonzero = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(ref[i])) continue;
    if (!(std::fabs(got[i] - ref[i]) <= limit)) ++over;
    if (!zero_rows.empty() && zero_rows[i / row_len] && got[i] != 0) {
      if (nonzero++ == 0) first_nonzero = i;
    }
  }
  if (over == 0 && nonzero == 0) {
    return ::testing::AssertionSuccess()
           << what << ": rel err " << stats.rel() << " <= " << rel_tol;
  }
  ::testing::AssertionResult result = ::testing::AssertionFailure();
  result << what << ": ";
  if (over > 0) {
    result << "max |got-ref| = " << stats.max_abs_err << " at "
           << FormatIndex(stats.worst, dims) << " (got " << got[stats.worst]
           << ", ref " << ref[stats.worst]
           << "), max|ref| = " << stats.max_abs_ref << ", rel err "
           << stats.rel() << " > tol " << rel_tol << "; " << over << " of "
           << got.size() << " entries off. ";
  }
  if (nonzero > 0) {
    result << nonzero << " entries should be exactly 0, first at "
           << FormatIndex(first_nonzero, dims) << " (got " << got[first_nonzero]
           << ")";
  }
  return result;
}

}  // namespace attnserve::test
