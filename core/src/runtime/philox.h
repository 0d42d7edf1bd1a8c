// Philox-4x32-10: the counter-based random generator of Salmon, Moraes, Dror
// and Shaw ("Parallel random numbers: as easy as 1, 2, 3", SC 2011). A pure
// function of a 128-bit counter and a 64-bit key, so any element of a stream
// can be computed on its own, by any thread, in any order:
//
//   std::array<uint32_t, 4> r = Philox4x32x10({k, 0, 0, 0}, {seed_lo, 0});
//
// Each of the ten rounds multiplies words 0 and 2 by 0xD2511F53 and
// 0xCD9E8D57, swaps the halves of the 64-bit products into the next state
// with the key mixed in, and the key grows by the Weyl increments
// (0x9E3779B9, 0xBB67AE85) between rounds.
#ifndef ATTNSERVE_CORE_SRC_RUNTIME_PHILOX_H_
#define ATTNSERVE_CORE_SRC_RUNTIME_PHILOX_H_

#include <array>
#include <cstdint>

namespace attnserve::core {

inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
inline constexpr int kPhiloxRounds = 10;

// The four output words for `counter` under `key`. Pure; thread-safe.
std::array<uint32_t, 4> Philox4x32x10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_SRC_RUNTIME_PHILOX_H_
