// Softmax rows of the bf16 tile path, each fused into one pass over a score
// row: the exponential, the dropout factor, dS, and the rounding to bf16 of
// what the next tile products read (zero-padded to `n_pad` columns). With
// bf16 products the GEMMs run so fast that separate passes over the fp32
// tile (scale, exp, dropout, convert) would cost as much as the products.
//
// The exponential is 2^t with t = a·x − b·log2(e) folded into one fused
// multiply-add (a = scale·log2(e)), a degree-5 minimax polynomial on
// [-1/2, 1/2] and an exact power-of-two scaling: relative error below
// 3e-7 (as ExpShiftSum's 2 ulp), exactly 1 at x = shift/scale, exactly 0
// for x = -inf (masked cells) and for results below 2^-126. The sums stay
// fp32; bf16 outputs round to nearest even (subnormals flush to zero).
// AVX-512 BF16 code where the CPU has it (always, where the bf16 path
// runs), scalar code with the same formulas otherwise.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_SOFTMAX_ROWS_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_SOFTMAX_ROWS_H_

#include <cstdint>

namespace attnserve::core {

// exp(scale·x − shift) of the formula above, one value (tests).
float SoftmaxExp(float x, float scale, float shift);

// Forward: p[c] = exp(scale·x[c] − shift) for c < n; returns Σ p. Writes
// bf16(p[c] · keep[c] · keep_scale) to out[c] (no factor when keep is null)
// and 0 to out[n, n_pad). `scale` must be positive.
float SoftmaxRowToBf16(const float* x, int64_t n, float scale, float shift,
                       const uint8_t* keep, float keep_scale, uint16_t* out,
                       int64_t n_pad);

// Backward: p = exp(scale·x − shift) · inv_sum, dP' = dp · keep · keep_scale,
// dS = p · (dP' − rd), for c < n. Writes bf16(p · keep · keep_scale) to
// p_out (skipped when null), bf16(dS) to ds_out, dS in fp32 to ds32 (when
// not null; may be `dp` itself), and zeros to both bf16 rows in [n, n_pad).
// No keep factor when keep is null.
void SoftmaxGradRowToBf16(const float* x, const float* dp, int64_t n,
                          float scale, float shift, float inv_sum, float rd,
                          const uint8_t* keep, float keep_scale,
                          uint16_t* p_out, uint16_t* ds_out, float* ds32,
                          int64_t n_pad);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_SOFTMAX_ROWS_H_
