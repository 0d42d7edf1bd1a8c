// The dropout keep bits: Philox-4x32-10 against the published known-answer
// vectors, and both forms of DropoutBits against bit-by-bit evaluations of
// their definitions written here.
#include "runtime/dropout_bits.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/philox.h"

namespace attnserve::core {
namespace {

using Words = std::array<uint32_t, 4>;

TEST(PhiloxTest, MatchesPublishedKnownAnswers) {
  // The Random123 distribution's kat_vectors for philox4x32 with 10 rounds.
  EXPECT_EQ(Philox4x32x10({0, 0, 0, 0}, {0, 0}),
            (Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32x10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                          {0xffffffff, 0xffffffff}),
            (Words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32x10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                          {0xa4093822, 0x299f31d0}),
            (Words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// The generated stream's definition, one bit at a time.
uint8_t SpecBit(uint64_t seed, uint64_t offset, float keep_prob, uint64_t k) {
  const double t = std::floor(static_cast<double>(keep_prob) * 4294967296.0);
  const uint64_t c = k >> 2;
  const Words u = Philox4x32x10(
      {static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32),
       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)},
      {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return static_cast<double>(u[k & 3]) < t ? 1 : 0;
}

// Fill (and its portable path) for bits [k0, k0 + n), with guard bytes on
// both sides that must stay untouched.
enum class Path { kDefault, kPortable };
std::vector<uint8_t> FillWithGuards(const DropoutBits& bits, uint64_t k0,
                                    int64_t n, Path path) {
  constexpr uint8_t kGuard = 0xCD;
  std::vector<uint8_t> buf(static_cast<size_t>(n) + 2, kGuard);
  if (path == Path::kDefault) {
    bits.Fill(k0, n, buf.data() + 1);
  } else {
    bits.FillPortableForTesting(k0, n, buf.data() + 1);
  }
  EXPECT_EQ(buf.front(), kGuard) << "wrote before keep[0]";
  EXPECT_EQ(buf.back(), kGuard) << "wrote past keep[n-1]";
  return std::vector<uint8_t>(buf.begin() + 1, buf.end() - 1);
}

TEST(DropoutBitsTest, SeededFillMatchesBitByBitDefinition) {
  struct Stream {
    uint64_t seed;
    uint64_t offset;
    float keep_prob;
  };
  const Stream streams[] = {
      {0, 0, 0.5f},
      {2024, 7, 0.9f},
      {0x123456789ABCDEF0ull, 0xFEDCBA9876543210ull, 0.1f},
      {~0ull, ~0ull, 0.75f},
  };
  // Starts at every alignment, and ranges crossing the low counter word's
  // wrap (counter 2^32) and a 2^62 counter.
  const uint64_t starts[] = {0,
                             1,
                             2,
                             3,
                             5,
                             37,
                             1021,
                             (uint64_t{1} << 34) - 203,
                             (uint64_t{1} << 34) - 64,
                             (uint64_t{1} << 62) + 6};
  const int64_t lengths[] = {0,  1,  2,  3,  4,  5,   7,
                             31, 63, 64, 65, 97, 129, 1031};
  for (const Stream& s : streams) {
    const DropoutBits bits =
        DropoutBits::FromSeed(s.seed, s.offset, s.keep_prob);
    for (uint64_t k0 : starts) {
      for (int64_t n : lengths) {
        for (Path path : {Path::kDefault, Path::kPortable}) {
          const std::vector<uint8_t> got = FillWithGuards(bits, k0, n, path);
          for (int64_t c = 0; c < n; ++c) {
            ASSERT_EQ(got[c], SpecBit(s.seed, s.offset, s.keep_prob,
                                      k0 + static_cast<uint64_t>(c)))
                << "seed " << s.seed << " k0 " << k0 << " n " << n << " c " << c
                << (path == Path::kPortable ? " (portable)" : "");
          }
        }
      }
    }
  }
}

TEST(DropoutBitsTest, KeptFractionIsWithinFourSigmaOfKeepProb) {
  constexpr int64_t kBits = 1000000;
  for (float keep_prob : {0.1f, 0.5f, 0.9f}) {
    const DropoutBits bits = DropoutBits::FromSeed(99, 3, keep_prob);
    std::vector<uint8_t> keep(kBits);
    bits.Fill(11, kBits, keep.data());
    int64_t kept = 0;
    for (uint8_t b : keep) {
      ASSERT_LE(b, 1);
      kept += b;
    }
    const double p = keep_prob;
    const double sigma = std::sqrt(p * (1 - p) / kBits);
    EXPECT_NEAR(static_cast<double>(kept) / kBits, p, 4 * sigma)
        << "keep_prob " << keep_prob;
  }
}

TEST(DropoutBitsTest, KeepProbOneKeepsEveryBit) {
  const DropoutBits bits = DropoutBits::FromSeed(5, 0, 1.0f);
  EXPECT_TRUE(bits.KeepsAll());
  const std::vector<uint8_t> keep =
      FillWithGuards(bits, 3, 4099, Path::kDefault);
  for (size_t c = 0; c < keep.size(); ++c) ASSERT_EQ(keep[c], 1) << c;
}

TEST(DropoutBitsTest, KeepProbJustBelowOneIsNotKeepAll) {
  // T = 2^32 - 256 still drops the words at or above it.
  const float keep_prob = std::nextafter(1.0f, 0.0f);
  const DropoutBits bits = DropoutBits::FromSeed(5, 0, keep_prob);
  EXPECT_FALSE(bits.KeepsAll());
  const std::vector<uint8_t> keep =
      FillWithGuards(bits, 0, 1 << 16, Path::kDefault);
  for (size_t c = 0; c < keep.size(); ++c) {
    ASSERT_EQ(keep[c], SpecBit(5, 0, keep_prob, c)) << c;
  }
}

TEST(DropoutBitsTest, KeepProbZeroKeepsNothing) {
  const DropoutBits bits = DropoutBits::FromSeed(5, 0, 0.0f);
  EXPECT_FALSE(bits.KeepsAll());
  const std::vector<uint8_t> keep =
      FillWithGuards(bits, 1, 1000, Path::kDefault);
  for (size_t c = 0; c < keep.size(); ++c) ASSERT_EQ(keep[c], 0) << c;
}

TEST(DropoutBitsTest, MaskIsReadLeastSignificantBitFirst) {
  const uint8_t mask[] = {0x01, 0x80, 0xA5, 0x0F, 0xFF, 0x00, 0x3C, 0x96};
  const DropoutBits bits = DropoutBits::FromMask(mask);
  EXPECT_FALSE(bits.KeepsAll());
  // 0x01: only bit 0; 0x80: only bit 15; 0xA5 = 1010'0101: bits 16, 18, 21,
  // 23.
  const std::vector<uint8_t> first =
      FillWithGuards(bits, 0, 24, Path::kDefault);
  const std::vector<uint8_t> want = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                     0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1};
  EXPECT_EQ(first, want);
  // Every start and length inside the eight bytes.
  for (uint64_t k0 = 0; k0 < 64; ++k0) {
    for (int64_t n = 0; static_cast<uint64_t>(n) + k0 <= 64; ++n) {
      const std::vector<uint8_t> got =
          FillWithGuards(bits, k0, n, Path::kDefault);
      for (int64_t c = 0; c < n; ++c) {
        const uint64_t k = k0 + static_cast<uint64_t>(c);
        ASSERT_EQ(got[c], (mask[k / 8] >> (k % 8)) & 1)
            << "k0 " << k0 << " n " << n << " c " << c;
      }
    }
  }
}

int Differences(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

TEST(DropoutBitsTest, DifferentOffsetsAndSeedsGiveDifferentStreams) {
  constexpr int64_t kBits = 4096;
  const auto stream = [&](uint64_t seed, uint64_t offset) {
    return FillWithGuards(DropoutBits::FromSeed(seed, offset, 0.5f), 0, kBits,
                          Path::kDefault);
  };
  const std::vector<uint8_t> base = stream(42, 0);
  // Independent streams at keep_prob 0.5 differ in about half the bits.
  for (const auto& [seed, offset] : std::vector<std::pair<uint64_t, uint64_t>>{
           {42, 1},
           {42, uint64_t{1} << 32},
           {43, 0},
           {42 + (uint64_t{1} << 32), 0}}) {
    const int d = Differences(base, stream(seed, offset));
    EXPECT_GT(d, kBits / 2 - 300) << "seed " << seed << " offset " << offset;
    EXPECT_LT(d, kBits / 2 + 300) << "seed " << seed << " offset " << offset;
  }
  // And a stream is a function of (seed, offset) alone.
  EXPECT_EQ(Differences(base, stream(42, 0)), 0);
}

TEST(DropoutBitsTest, ConcurrentFillsAgree) {
  const DropoutBits bits = DropoutBits::FromSeed(7, 9, 0.3f);
  constexpr int64_t kBits = 50000;
  std::vector<uint8_t> want(kBits);
  bits.Fill(13, kBits, want.data());
  std::vector<std::vector<uint8_t>> got(4, std::vector<uint8_t>(kBits));
  std::vector<std::thread> threads;
  for (auto& g : got) {
    threads.emplace_back([&bits, &g] { bits.Fill(13, kBits, g.data()); });
  }
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

}  // namespace
}  // namespace attnserve::core
