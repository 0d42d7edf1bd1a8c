// Dropout keep bits: bit k of a request's dropout stream says whether score
// element k (the flat index of docs/semantics.md, e.g.
// ((b*N1 + n)*Sq + i)*Skv + j) is kept. The stream comes either from a
// caller's packed mask or from a seeded counter-based generator, and any
// stretch of it can be produced on its own, so tiles on different threads
// read the bits they need in any order:
//
//   DropoutBits bits = DropoutBits::FromSeed(seed, offset, keep_prob);
//   uint8_t keep[97];
//   bits.Fill(/*k0=*/row_start + j0, /*n=*/97, keep);  // keep[c] is 0 or 1.
//
// Generated bits: key = {lo32(seed), hi32(seed)}; bit k uses the Philox
// counter c = k >> 2 as {lo32(c), hi32(c), lo32(offset), hi32(offset)} and
// its output word u = word (k & 3); the bit is kept iff u < T with
// T = floor(keep_prob * 2^32) in double (keep_prob = 1 keeps everything).
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_DROPOUT_BITS_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_DROPOUT_BITS_H_

#include <cstdint>

namespace attnserve::core {

class DropoutBits {
 public:
  // Bits read from `packed_bits`, least significant bit first
  // (bit k = (packed_bits[k >> 3] >> (k & 7)) & 1), 1 = keep. The bytes are
  // not copied: they must outlive the object and cover every bit asked for.
  static DropoutBits FromMask(const uint8_t* packed_bits);

  // Bits of the seeded generator above. `keep_prob` is expected in (0, 1];
  // values >= 1 keep every bit, values <= 0 (or NaN) keep none.
  static DropoutBits FromSeed(uint64_t seed, uint64_t offset, float keep_prob);

  // Writes keep[c] in {0, 1} for bits k0 + c, 0 <= c < n (any k0, any
  // n >= 0; nothing is written for n <= 0). Thread-safe: concurrent calls on
  // one object are fine.
  void Fill(uint64_t k0, int64_t n, uint8_t* keep) const;

  // True when every bit is kept (a seeded stream with keep_prob >= 1), so
  // callers may skip the bits altogether.
  bool KeepsAll() const { return mask_ == nullptr && keep_all_; }

  // Fill without the AVX2 path, so tests can check the portable code on any
  // machine. Same result as Fill.
  void FillPortableForTesting(uint64_t k0, int64_t n, uint8_t* keep) const;

 private:
  DropoutBits() = default;

  void FillFromMask(uint64_t k0, int64_t n, uint8_t* keep) const;
  void FillFromSeed(uint64_t k0, int64_t n, uint8_t* keep,
                    bool allow_avx2) const;

  const uint8_t* mask_ = nullptr;  // Set for the mask form only.
  uint32_t key0_ = 0;
  uint32_t key1_ = 0;
  uint64_t offset_ = 0;
  uint32_t threshold_ = 0;  // T when T < 2^32.
  bool keep_all_ = false;   // T == 2^32.
};

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_DROPOUT_BITS_H_
