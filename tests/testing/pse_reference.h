// The pse of a request as the test side reads it: the additive score bias of
// every cell and the reduction of dS to dpse, from the conventions (not from
// the core).
//
//   s = scale * qk + c * bias(b, n, i, j)      c = scale for pse_type 1
//
// External pse (types 0/1), indexed by query head n:
//   [B,N1,Sq,Skv] / [1,N1,Sq,Skv]: element (b or 0, n, i, j)
//   [B,N1,1,Skv]: element (b, n, 0, j) for every i
//   [B,N1,1024,S] / [1,N1,1024,S] (compressed): row i >= Sq−1024 reads
//     comp[i − (Sq − 1024)][j]; row i < Sq−1024 reads comp[1023][j + Sq−1−i]
// Slopes (types 2/3), FLOAT32 [B,N1] or [N1]:
//   bias = −slope·|rel| (2) or −slope·sqrt|rel| (3),
//   rel = (j + kv_start_idx) − (i + q_start_idx)
// dpse = Σ over the cells reading an element of c·dS (external), or of
// dS·(−|rel|) resp. dS·(−sqrt|rel|) (slopes).
//
//   PseSpec spec;  spec.form = PseForm::kRow;  ...  spec.values = ...;
//   double bias = PseBias(spec, b, n, i, j, /*sq=*/37);
//
// Pure and thread-safe; aborts when a cell reads outside the tensor (a test
// bug: such a cell must be masked).
#ifndef ATTNSERVE_TESTS_TESTING_PSE_REFERENCE_H_
#define ATTNSERVE_TESTS_TESTING_PSE_REFERENCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tests/testing/reference_attention.h"

namespace attnserve::test {

enum class PseForm {
  kNone,
  kFull,          // [B, N1, Sq, Skv]
  kBatchShared,   // [1, N1, Sq, Skv]
  kRow,           // [B, N1, 1, Skv]
  kAlibi,         // [B, N1, 1024, S]
  kAlibiShared,   // [1, N1, 1024, S]
  kSlopes,        // [B, N1] FLOAT32 (pse_type 2/3)
  kSlopesShared,  // [N1] FLOAT32 (pse_type 2/3)
};
std::string PseFormName(PseForm form);
bool IsSlopes(PseForm form);
bool IsCompressedPse(PseForm form);

inline constexpr int64_t kCompressedPseRows = 1024;

struct PseSpec {
  PseForm form = PseForm::kNone;
  int64_t pse_type = 1;
  int64_t b = 1;     // Batches.
  int64_t n1 = 1;    // Query heads.
  int64_t sq = 1;    // Rows of the full forms (padded Sq).
  int64_t skv = 1;   // Last dim of the external forms (max Skv in TND).
  double scale = 1;  // The float32 scale_value (type 1 multiplies by it).
  int64_t q_start = 0;
  int64_t kv_start = 0;
  std::vector<double> values;  // Row-major, as the kernel decodes them.
};

// The tensor shape of `spec` (empty for kNone).
std::vector<int64_t> PseShape(const PseSpec& spec);

// Flat element of an external pse read by cell (b, n, i, j) of a batch with
// query length `sq_b`.
int64_t PseElement(const PseSpec& spec, int64_t b, int64_t n, int64_t i,
                   int64_t j, int64_t sq_b);

// The additive score bias of cell (b, n, i, j) (c included).
double PseBias(const PseSpec& spec, int64_t b, int64_t n, int64_t i, int64_t j,
               int64_t sq_b);

// The bias function of batch `b` for a per-batch RefProblem (its batch
// index is 0). Copies `spec`.
BiasFn MakePseBiasFn(const PseSpec& spec, int64_t b, int64_t sq_b);

// Accumulators of the dpse reduction, each sized like the pse.
struct DpseSums {
  std::vector<double> dpse;       // Σ shares.
  std::vector<double> magnitude;  // Σ |share|: the error scale of the sum.
  std::vector<bool> read;         // Some kept cell reads the element.

  explicit DpseSums(size_t size)
      : dpse(size, 0.0), magnitude(size, 0.0), read(size, false) {}
};

// Adds kept cell (b, n, i, j)'s share of `ds` to `sums`.
void AccumulateDpse(const PseSpec& spec, int64_t b, int64_t n, int64_t i,
                    int64_t j, int64_t sq_b, double ds, DpseSums* sums);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_PSE_REFERENCE_H_
