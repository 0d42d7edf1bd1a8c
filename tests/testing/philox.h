// The dropout keep bits of a generated mask, computed on the test side from
// the published Philox-4x32-10 counter-based generator (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC'11), independently of
// the core.
//
//   PhiloxBlock out = Philox4x32x10({0, 0, 0, 0}, {0, 0});
//   // out == {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}
//   bool keep = PhiloxKeepBit(/*seed=*/7, /*offset=*/0, /*bit=*/12, 0.9f);
//
// The mapping from bit index to keep decision is the one the semantics fix:
// key = {lo32(seed), hi32(seed)}; counter = {lo32(k>>2), hi32(k>>2),
// lo32(offset), hi32(offset)}; u = output word (k & 3); keep iff
// u < floor(kp * 2^32), kp the float32 keep_prob. Pure and thread-safe.
#ifndef ATTNSERVE_TESTS_TESTING_PHILOX_H_
#define ATTNSERVE_TESTS_TESTING_PHILOX_H_

#include <array>
#include <cstdint>

namespace attnserve::test {

using PhiloxBlock = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox-4x32 on `counter` with `key`.
PhiloxBlock Philox4x32x10(const PhiloxBlock& counter, const PhiloxKey& key);

// The keep threshold floor(kp * 2^32) for a float32 keep probability kp
// (2^32 when kp == 1: every bit kept).
uint64_t PhiloxKeepThreshold(float keep_prob);

// True when bit `bit` of the generated mask keeps its cell.
bool PhiloxKeepBit(uint64_t seed, uint64_t offset, uint64_t bit,
                   float keep_prob);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_PHILOX_H_
