#include "tests/testing/pse_reference.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace attnserve::test {
namespace {

void PseCheck(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "pse_reference: %s\n", what);
    std::abort();
  }
}

int64_t SlopeIndex(const PseSpec& spec, int64_t b, int64_t n) {
  return spec.form == PseForm::kSlopes ? b * spec.n1 + n : n;
}

double Rel(const PseSpec& spec, int64_t i, int64_t j) {
  return static_cast<double>((j + spec.kv_start) - (i + spec.q_start));
}

// d bias / d slope of a cell: −|rel| (type 2) or −sqrt|rel| (type 3).
double SlopeFactor(const PseSpec& spec, int64_t i, int64_t j) {
  const double rel = std::fabs(Rel(spec, i, j));
  return spec.pse_type == 3 ? -std::sqrt(rel) : -rel;
}

// c of s = scale * qk + c * pse for the external forms.
double ExternalFactor(const PseSpec& spec) {
  return spec.pse_type == 1 ? spec.scale : 1.0;
}

}  // namespace

std::string PseFormName(PseForm form) {
  switch (form) {
    case PseForm::kNone:
      return "NoPse";
    case PseForm::kFull:
      return "PseBNSS";
    case PseForm::kBatchShared:
      return "Pse1NSS";
    case PseForm::kRow:
      return "PseBN1S";
    case PseForm::kAlibi:
      return "PseBNHS";
    case PseForm::kAlibiShared:
      return "Pse1NHS";
    case PseForm::kSlopes:
      return "SlopesBN";
    case PseForm::kSlopesShared:
      return "SlopesN";
  }
  return "?";
}

bool IsSlopes(PseForm form) {
  return form == PseForm::kSlopes || form == PseForm::kSlopesShared;
}

bool IsCompressedPse(PseForm form) {
  return form == PseForm::kAlibi || form == PseForm::kAlibiShared;
}

std::vector<int64_t> PseShape(const PseSpec& s) {
  switch (s.form) {
    case PseForm::kNone:
      return {};
    case PseForm::kFull:
      return {s.b, s.n1, s.sq, s.skv};
    case PseForm::kBatchShared:
      return {1, s.n1, s.sq, s.skv};
    case PseForm::kRow:
      return {s.b, s.n1, 1, s.skv};
    case PseForm::kAlibi:
      return {s.b, s.n1, kCompressedPseRows, s.skv};
    case PseForm::kAlibiShared:
      return {1, s.n1, kCompressedPseRows, s.skv};
    case PseForm::kSlopes:
      return {s.b, s.n1};
    case PseForm::kSlopesShared:
      return {s.n1};
  }
  return {};
}

int64_t PseElement(const PseSpec& s, int64_t b, int64_t n, int64_t i, int64_t j,
                   int64_t sq_b) {
  PseCheck(j >= 0 && j < s.skv, "key index outside the pse");
  switch (s.form) {
    case PseForm::kFull:
      PseCheck(i < s.sq, "query row outside the pse");
      return ((b * s.n1 + n) * s.sq + i) * s.skv + j;
    case PseForm::kBatchShared:
      PseCheck(i < s.sq, "query row outside the pse");
      return (n * s.sq + i) * s.skv + j;
    case PseForm::kRow:
      return (b * s.n1 + n) * s.skv + j;
    case PseForm::kAlibi:
    case PseForm::kAlibiShared: {
      const int64_t first = sq_b - kCompressedPseRows;
      PseCheck(first >= 0, "compressed pse needs Sq > 1024");
      int64_t row = 0, col = 0;
      if (i >= first) {
        row = i - first;
        col = j;
      } else {
        row = kCompressedPseRows - 1;
        col = j + sq_b - 1 - i;
      }
      PseCheck(col < s.skv, "compressed pse read beyond its last column");
      const int64_t plane = s.form == PseForm::kAlibi ? b * s.n1 + n : n;
      return (plane * kCompressedPseRows + row) * s.skv + col;
    }
    default:
      PseCheck(false, "PseElement of a form without elements per cell");
  }
  return -1;
}

double PseBias(const PseSpec& s, int64_t b, int64_t n, int64_t i, int64_t j,
               int64_t sq_b) {
  if (s.form == PseForm::kNone) return 0;
  if (IsSlopes(s.form)) {
    const double slope = s.values.at(static_cast<size_t>(SlopeIndex(s, b, n)));
    return slope * SlopeFactor(s, i, j);
  }
  return ExternalFactor(s) *
         s.values.at(static_cast<size_t>(PseElement(s, b, n, i, j, sq_b)));
}

BiasFn MakePseBiasFn(const PseSpec& spec, int64_t b, int64_t sq_b) {
  if (spec.form == PseForm::kNone) return nullptr;
  return [spec, b, sq_b](int64_t, int64_t n, int64_t i, int64_t j) {
    return PseBias(spec, b, n, i, j, sq_b);
  };
}

void AccumulateDpse(const PseSpec& s, int64_t b, int64_t n, int64_t i,
                    int64_t j, int64_t sq_b, double ds, DpseSums* sums) {
  if (s.form == PseForm::kNone) return;
  int64_t e = 0;
  double share = 0;
  if (IsSlopes(s.form)) {
    e = SlopeIndex(s, b, n);
    share = ds * SlopeFactor(s, i, j);
  } else {
    e = PseElement(s, b, n, i, j, sq_b);
    share = ExternalFactor(s) * ds;
  }
  const size_t at = static_cast<size_t>(e);
  sums->dpse.at(at) += share;
  sums->magnitude.at(at) += std::fabs(share);
  sums->read.at(at) = true;
}

}  // namespace attnserve::test
