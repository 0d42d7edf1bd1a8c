#include "attnserve/client/tensor_helpers.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve {
namespace {

using ::attnserve::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Value after a round trip through `dtype`.
float RoundTrip(float value, v1::DataType dtype) {
  absl::StatusOr<v1::Tensor> t = MakeTensor({value}, {1}, dtype);
  EXPECT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::vector<float>> back = TensorToFloats(*t);
  EXPECT_TRUE(back.ok()) << back.status();
  return back->at(0);
}

uint16_t Bits16(const v1::Tensor& t, size_t i) {
  uint16_t bits;
  std::memcpy(&bits, t.data().data() + 2 * i, 2);
  return bits;
}

TEST(MakeTensorTest, Float32KeepsValuesAndShape) {
  const std::vector<float> values = {1.0f, -2.5f, 3.14159f, 1e-30f, 0.1f, 7.0f};
  absl::StatusOr<v1::Tensor> t =
      MakeTensor(values, {2, 3}, v1::DATA_TYPE_FLOAT32);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(t->shape(), ElementsAre(2, 3));
  ASSERT_EQ(t->data().size(), 24u);
  EXPECT_EQ(std::memcmp(t->data().data(), values.data(), 24), 0);
  EXPECT_EQ(TensorToFloats(*t).value(), values);
}

TEST(MakeTensorTest, Float16StoresLittleEndianHalfBits) {
  absl::StatusOr<v1::Tensor> t =
      MakeTensor({1.0f, -2.0f, 65504.0f}, {3}, v1::DATA_TYPE_FLOAT16);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->data().size(), 6u);
  EXPECT_EQ(static_cast<uint8_t>(t->data()[0]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(t->data()[1]), 0x3C);
  EXPECT_EQ(Bits16(*t, 1), 0xC000);
  EXPECT_EQ(Bits16(*t, 2), 0x7BFF);
}

TEST(MakeTensorTest, BFloat16StoresTopHalfOfFloatBits) {
  absl::StatusOr<v1::Tensor> t =
      MakeTensor({1.0f, -2.0f}, {2}, v1::DATA_TYPE_BFLOAT16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(Bits16(*t, 0), 0x3F80);
  EXPECT_EQ(Bits16(*t, 1), 0xC000);
}

TEST(RoundTripTest, Float16IsExactForRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 0.333251953125f, 65504.0f,
                  std::ldexp(1.0f, -14), std::ldexp(1.0f, -24)}) {
    EXPECT_EQ(RoundTrip(v, v1::DATA_TYPE_FLOAT16), v) << v;
  }
}

TEST(RoundTripTest, BFloat16IsExactForRepresentableValues) {
  // std::ldexp(255, 120) is the largest finite bf16, 2^-133 the smallest
  // subnormal.
  for (float v : {0.0f, 1.0f, -2.5f, 0.333984375f, std::ldexp(255.0f, 120),
                  std::ldexp(1.0f, -126), std::ldexp(1.0f, -133)}) {
    EXPECT_EQ(RoundTrip(v, v1::DATA_TYPE_BFLOAT16), v) << v;
  }
}

TEST(RoundTripTest, Float16RoundsHalfwayCasesToEven) {
  const float ulp = std::ldexp(1.0f, -10);  // fp16 spacing in [1, 2)
  // Halfway between 1 (even mantissa) and 1 + ulp: down to 1.
  EXPECT_EQ(RoundTrip(1.0f + ulp / 2, v1::DATA_TYPE_FLOAT16), 1.0f);
  // Halfway between 1 + ulp (odd) and 1 + 2 ulp (even): up.
  EXPECT_EQ(RoundTrip(1.0f + 1.5f * ulp, v1::DATA_TYPE_FLOAT16),
            1.0f + 2 * ulp);
  // Just above halfway: up.
  EXPECT_EQ(
      RoundTrip(1.0f + ulp / 2 + std::ldexp(1.0f, -20), v1::DATA_TYPE_FLOAT16),
      1.0f + ulp);
  // Negative values mirror.
  EXPECT_EQ(RoundTrip(-(1.0f + ulp / 2), v1::DATA_TYPE_FLOAT16), -1.0f);
}

TEST(RoundTripTest, BFloat16RoundsHalfwayCasesToEven) {
  const float ulp = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  EXPECT_EQ(RoundTrip(1.0f + ulp / 2, v1::DATA_TYPE_BFLOAT16), 1.0f);
  EXPECT_EQ(RoundTrip(1.0f + 1.5f * ulp, v1::DATA_TYPE_BFLOAT16),
            1.0f + 2 * ulp);
  EXPECT_EQ(
      RoundTrip(1.0f + ulp / 2 + std::ldexp(1.0f, -20), v1::DATA_TYPE_BFLOAT16),
      1.0f + ulp);
  EXPECT_EQ(RoundTrip(1.0f / 3.0f, v1::DATA_TYPE_BFLOAT16), 0.333984375f);
}

TEST(RoundTripTest, Float16OverflowGivesInfinityAndNanStaysNan) {
  // 65520 is halfway between 65504 and 65536 (= inf after rounding to even).
  EXPECT_EQ(RoundTrip(65520.0f, v1::DATA_TYPE_FLOAT16),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(RoundTrip(65519.0f, v1::DATA_TYPE_FLOAT16), 65504.0f);
  EXPECT_EQ(RoundTrip(-1e6f, v1::DATA_TYPE_FLOAT16),
            -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(RoundTrip(std::nanf(""), v1::DATA_TYPE_FLOAT16)));
  EXPECT_TRUE(std::isnan(RoundTrip(std::nanf(""), v1::DATA_TYPE_BFLOAT16)));
}

TEST(MakeTensorTest, RejectsValueCountNotMatchingShape) {
  EXPECT_THAT(MakeTensor({1.0f, 2.0f, 3.0f}, {2, 2}, v1::DATA_TYPE_FLOAT32),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("needs 4 elements, got 3")));
}

TEST(MakeTensorTest, RejectsNegativeDimension) {
  EXPECT_THAT(
      MakeTensor({}, {2, -1}, v1::DATA_TYPE_FLOAT16),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape[1]")));
}

TEST(MakeTensorTest, RejectsNonFloatingDtype) {
  EXPECT_THAT(MakeTensor({1.0f}, {1}, v1::DATA_TYPE_INT32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("INT32")));
  EXPECT_THAT(MakeTensor({1.0f}, {1}, v1::DATA_TYPE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TensorToFloatsTest, RejectsDataShorterOrLongerThanShape) {
  v1::Tensor t = MakeTensor({1, 2, 3, 4}, {4}, v1::DATA_TYPE_BFLOAT16).value();
  t.mutable_data()->pop_back();
  EXPECT_THAT(TensorToFloats(t), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("has 7 bytes")));
  t.mutable_data()->append("abc");
  EXPECT_THAT(TensorToFloats(t), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("has 10 bytes")));
}

TEST(TensorToFloatsTest, RejectsIntegerTensors) {
  v1::Tensor t = MakeInt32Tensor({1, 2}, {2}).value();
  EXPECT_THAT(TensorToFloats(t), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TensorToFloatsTest, RejectsShapeWhoseSizeOverflows) {
  v1::Tensor t;
  t.set_dtype(v1::DATA_TYPE_FLOAT32);
  for (int i = 0; i < 4; ++i) t.add_shape(int64_t{1} << 20);
  EXPECT_THAT(TensorToFloats(t), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("overflows")));
}

TEST(MakeInt32TensorTest, StoresLittleEndianInts) {
  v1::Tensor t = MakeInt32Tensor({1, -1}, {1, 2}).value();
  EXPECT_EQ(t.dtype(), v1::DATA_TYPE_INT32);
  EXPECT_EQ(t.data(), std::string("\x01\x00\x00\x00\xff\xff\xff\xff", 8));
  EXPECT_THAT(MakeInt32Tensor({1}, {2}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RandomTensorTest, SameSeedGivesSameBytesAndValuesStayInRange) {
  v1::Tensor a = MakeRandomTensor({3, 5, 7}, v1::DATA_TYPE_FLOAT32, 42).value();
  v1::Tensor b = MakeRandomTensor({3, 5, 7}, v1::DATA_TYPE_FLOAT32, 42).value();
  v1::Tensor c = MakeRandomTensor({3, 5, 7}, v1::DATA_TYPE_FLOAT32, 43).value();
  EXPECT_EQ(a.data(), b.data());
  EXPECT_NE(a.data(), c.data());
  const std::vector<float> values = TensorToFloats(a).value();
  for (float v : values) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
  std::vector<float> wide = RandomFloats(1000, 7, 2.0f, 3.0f);
  for (float v : wide) {
    EXPECT_GE(v, 2.0f);
    EXPECT_LT(v, 3.0f);
  }
}

TEST(CausalMaskTest, MasksStrictlyAboveTheDiagonal) {
  v1::Tensor mask = MakeCausalMask(2, 3).value();
  EXPECT_EQ(mask.dtype(), v1::DATA_TYPE_BOOL);
  EXPECT_THAT(mask.shape(), ElementsAre(2, 3));
  EXPECT_EQ(mask.data(), std::string("\0\1\1\0\0\1", 6));
  EXPECT_THAT(MakeCausalMask(-1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DataTypeTest, ParsesShortAndLongNames) {
  EXPECT_EQ(ParseDataType("fp32").value(), v1::DATA_TYPE_FLOAT32);
  EXPECT_EQ(ParseDataType("float32").value(), v1::DATA_TYPE_FLOAT32);
  EXPECT_EQ(ParseDataType("FP16").value(), v1::DATA_TYPE_FLOAT16);
  EXPECT_EQ(ParseDataType("float16").value(), v1::DATA_TYPE_FLOAT16);
  EXPECT_EQ(ParseDataType("bf16").value(), v1::DATA_TYPE_BFLOAT16);
  EXPECT_EQ(ParseDataType("bfloat16").value(), v1::DATA_TYPE_BFLOAT16);
  EXPECT_EQ(ParseDataType("DATA_TYPE_INT32").value(), v1::DATA_TYPE_INT32);
  EXPECT_THAT(ParseDataType("fp8"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp8")));
  EXPECT_THAT(ParseDataType("unspecified"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DataTypeTest, NamesAndItemSizes) {
  EXPECT_EQ(DataTypeName(v1::DATA_TYPE_BFLOAT16), "BFLOAT16");
  EXPECT_EQ(DataTypeName(v1::DATA_TYPE_UNSPECIFIED), "UNSPECIFIED");
  EXPECT_EQ(DataTypeName(static_cast<v1::DataType>(99)), "?99");
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_FLOAT32).value(), 4u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_FLOAT16).value(), 2u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_BOOL).value(), 1u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_INT64).value(), 8u);
  EXPECT_THAT(ItemSize(v1::DATA_TYPE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace attnserve
