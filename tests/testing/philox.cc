#include "tests/testing/philox.h"

#include <cmath>

namespace attnserve::test {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

// One round: two 32x32->64 products mixed with the other words and the key.
PhiloxBlock Round(const PhiloxBlock& x, const PhiloxKey& key) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * x[0];
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * x[2];
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32);
  const uint32_t lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32);
  const uint32_t lo1 = static_cast<uint32_t>(p1);
  return PhiloxBlock{hi1 ^ x[1] ^ key[0], lo1, hi0 ^ x[3] ^ key[1], lo0};
}

}  // namespace

PhiloxBlock Philox4x32x10(const PhiloxBlock& counter, const PhiloxKey& key) {
  PhiloxBlock x = counter;
  PhiloxKey k = key;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kWeyl0;
      k[1] += kWeyl1;
    }
    x = Round(x, k);
  }
  return x;
}

uint64_t PhiloxKeepThreshold(float keep_prob) {
  return static_cast<uint64_t>(
      std::floor(static_cast<double>(keep_prob) * 4294967296.0));
}

bool PhiloxKeepBit(uint64_t seed, uint64_t offset, uint64_t bit,
                   float keep_prob) {
  const uint64_t c = bit >> 2;
  const PhiloxBlock out = Philox4x32x10(
      {static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32),
       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)},
      {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return out[bit & 3] < PhiloxKeepThreshold(keep_prob);
}

}  // namespace attnserve::test
