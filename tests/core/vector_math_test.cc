// The softmax's exponential at every instruction-set level this CPU runs,
// against std::exp in double precision.
#include "runtime/vector_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace attnserve::core {
namespace {

std::vector<SimdLevel> LevelsHere() {
  std::vector<SimdLevel> levels = {SimdLevel::kScalar};
  if (BestSimdLevel() >= SimdLevel::kAvx2) levels.push_back(SimdLevel::kAvx2);
  if (BestSimdLevel() >= SimdLevel::kAvx512) {
    levels.push_back(SimdLevel::kAvx512);
  }
  return levels;
}

class ExpShiftSumTest : public testing::TestWithParam<SimdLevel> {};

TEST_P(ExpShiftSumTest, MatchesStdExpOverTheSoftmaxRange) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-90.0f, 0.0f);
  // Every length up to 40 exercises the vector body and each tail length.
  for (int64_t n = 0; n <= 40; ++n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = dist(gen);
    const float shift = -1.5f;
    std::vector<float> in = x;
    const float sum = ExpShiftSumAt(GetParam(), x.data(), n, shift);
    double want_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double shifted = static_cast<double>(in[i]) - shift;
      const double want = shifted < -87.3 ? 0.0 : std::exp(shifted);
      want_sum += want;
      if (want == 0.0) {
        EXPECT_EQ(x[i], 0.0f) << "n=" << n << " i=" << i;
      } else {
        EXPECT_NEAR(x[i], want, 3e-7 * want) << "n=" << n << " x=" << in[i];
      }
    }
    EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum + 1e-30) << "n=" << n;
  }
}

TEST_P(ExpShiftSumTest, NegativeInfinityGivesZeroAndNanStaysNan) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(19, -inf);
  x[3] = 0.0f;
  x[17] = 1.0f;
  x[18] = std::numeric_limits<float>::quiet_NaN();
  const float sum = ExpShiftSumAt(GetParam(), x.data(), 18, 1.0f);
  EXPECT_NEAR(sum, std::exp(-1.0f) + 1.0f, 1e-6);
  for (int i = 0; i < 18; ++i) {
    if (i != 3 && i != 17) {
      EXPECT_EQ(x[static_cast<size_t>(i)], 0.0f) << i;
    }
  }
  EXPECT_TRUE(std::isnan(x[18]));  // Past n: untouched.
  std::vector<float> nan(9, std::numeric_limits<float>::quiet_NaN());
  ExpShiftSumAt(GetParam(), nan.data(), 9, 0.0f);
  for (float v : nan) EXPECT_TRUE(std::isnan(v));
}

TEST_P(ExpShiftSumTest, ExactAtZeroAndAcrossBinades) {
  for (float v : {0.0f, -0.5f, -1.0f, -10.0f, -20.0f, -40.0f, -80.0f, -87.0f,
                  -0.34657359f, -0.34657360f}) {
    std::vector<float> x(11, v);
    ExpShiftSumAt(GetParam(), x.data(), 11, 0.0f);
    for (float e : x)
      EXPECT_NEAR(e, std::exp(static_cast<double>(v)),
                  3e-7 * std::exp(static_cast<double>(v)));
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, ExpShiftSumTest,
                         testing::ValuesIn(LevelsHere()),
                         [](const testing::TestParamInfo<SimdLevel>& info) {
                           return std::string(SimdLevelName(info.param));
                         });

TEST(SimdLevelTest, DispatchUsesTheBestLevel) {
  std::vector<float> a(37), b(37);
  for (size_t i = 0; i < a.size(); ++i) a[i] = b[i] = -0.37f * i;
  const float s1 = ExpShiftSum(a.data(), 37, 0.25f);
  const float s2 = ExpShiftSumAt(BestSimdLevel(), b.data(), 37, 0.25f);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace attnserve::core
