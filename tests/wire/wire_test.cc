// The wire library: the DataType table, element and byte counts with
// overflow checks, and the data-length check, against hand-computed values;
// huge-page advice against what the kernel reports for the memory.
#include <sys/mman.h>

#include <cstdint>
#include <string>

#include "attnserve/core/dtype.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/dtype.h"
#include "attnserve/wire/huge_pages.h"
#include "attnserve/wire/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/process_memory.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::wire {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

v1::Tensor Tensor(v1::DataType dtype, std::vector<int64_t> shape,
                  size_t data_bytes) {
  v1::Tensor t;
  t.set_dtype(dtype);
  t.mutable_shape()->Assign(shape.begin(), shape.end());
  t.mutable_data()->assign(data_bytes, '\0');
  return t;
}

TEST(WireDTypeTest, EveryWireDTypeRoundTripsThroughTheCore) {
  for (int value = v1::DataType_MIN; value <= v1::DataType_MAX; ++value) {
    if (value == v1::DATA_TYPE_UNSPECIFIED) continue;
    ATTN_ASSERT_OK_AND_ASSIGN(core::DType dtype, ToCoreDType(value, "x"));
    EXPECT_EQ(ToWireDType(dtype), value);
    EXPECT_EQ(DataTypeName(value), core::DTypeName(dtype));
  }
}

TEST(WireDTypeTest, NamesMatchTheEnumWithoutItsPrefix) {
  EXPECT_EQ(DataTypeName(v1::DATA_TYPE_BFLOAT16), "BFLOAT16");
  EXPECT_EQ(DataTypeName(v1::DATA_TYPE_FLOAT8_E4M3FN), "FLOAT8_E4M3FN");
  EXPECT_EQ(DataTypeName(v1::DATA_TYPE_UNSPECIFIED), "UNSPECIFIED");
  EXPECT_EQ(DataTypeName(42), "?42");
}

TEST(WireDTypeTest, UnspecifiedAndUnknownValuesNameTheField) {
  const absl::StatusOr<core::DType> unset =
      ToCoreDType(v1::DATA_TYPE_UNSPECIFIED, "query.dtype");
  EXPECT_THAT(unset, StatusIs(absl::StatusCode::kInvalidArgument,
                              HasSubstr("DATA_TYPE_UNSPECIFIED")));
  EXPECT_EQ(core::FieldOf(unset.status()), "query.dtype");
  EXPECT_THAT(ToCoreDType(42, "key.dtype"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown DataType value 42")));
}

TEST(WireDTypeTest, ItemSizes) {
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_FLOAT32).value(), 4u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_BFLOAT16).value(), 2u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_FLOAT8_E5M2).value(), 1u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_BOOL).value(), 1u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_INT32).value(), 4u);
  EXPECT_EQ(ItemSize(v1::DATA_TYPE_INT64).value(), 8u);
  EXPECT_THAT(ItemSize(v1::DATA_TYPE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(WireTensorTest, CountsElementsAndBytes) {
  const v1::Tensor t = Tensor(v1::DATA_TYPE_FLOAT16, {2, 3, 5}, 60);
  EXPECT_EQ(ElementCount(t, "q").value(), 30);
  EXPECT_EQ(ByteSize(t, "q").value(), 60u);
  EXPECT_THAT(CheckData(t, "q"), IsOk());
  EXPECT_EQ(ShapeString(t), "[2,3,5]");
  // Ranks above 8 (refused by the server's limits) show their first dims.
  v1::Tensor deep = Tensor(v1::DATA_TYPE_FLOAT32, {}, 0);
  deep.mutable_shape()->Resize(1000, 2);
  EXPECT_EQ(ShapeString(deep), "[2,2,2,2,2,2,2,2,...] (rank 1000)");
  // A scalar has one element; an empty dimension none.
  EXPECT_EQ(ElementCount(Tensor(v1::DATA_TYPE_FLOAT32, {}, 4), "s").value(), 1);
  EXPECT_EQ(
      ElementCount(Tensor(v1::DATA_TYPE_FLOAT32, {4, 0, 9}, 0), "e").value(),
      0);
}

TEST(WireTensorTest, NegativeDimensionNamesItsIndex) {
  const absl::Status status =
      ElementCount(Tensor(v1::DATA_TYPE_FLOAT32, {2, -1}, 0), "key").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("must be >= 0, got -1")));
  EXPECT_EQ(core::FieldOf(status), "key.shape[1]");
}

TEST(WireTensorTest, OverflowIsAnErrorNotAWrappedCount) {
  // 2^31 * 2^31 * 2^2 = 2^64 wraps to 0 in 64 bits.
  const v1::Tensor elements =
      Tensor(v1::DATA_TYPE_FLOAT32, {int64_t{1} << 31, int64_t{1} << 31, 4}, 0);
  EXPECT_THAT(
      ElementCount(elements, "q"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
  // 2^61 elements fit in int64; their 2^64 bytes of INT64 do not.
  const v1::Tensor bytes = Tensor(v1::DATA_TYPE_INT64, {int64_t{1} << 61}, 0);
  EXPECT_EQ(ElementCount(bytes, "v").value(), int64_t{1} << 61);
  const absl::Status status = ByteSize(bytes, "v").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("byte size")));
  EXPECT_EQ(core::FieldOf(status), "v.shape");
}

TEST(WireTensorTest, DataLengthMustMatchTheShape) {
  const absl::Status status =
      CheckData(Tensor(v1::DATA_TYPE_BFLOAT16, {4}, 7), "value");
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has 7 bytes, expected 8 = prod([4]) * "
                                 "2 (BFLOAT16)")));
  EXPECT_EQ(core::FieldOf(status), "value.data");
  EXPECT_EQ(core::FieldOf(
                CheckData(Tensor(v1::DATA_TYPE_UNSPECIFIED, {1}, 4), "value")),
            "value.dtype");
}

// The "AnonHugePages:" of this process's mappings inside [begin, end), in kB.
int64_t AnonHugePagesKb(uintptr_t begin, uintptr_t end) {
  int64_t total = 0;
  for (const test::MemoryMapping& mapping : test::ReadSmaps()) {
    if (mapping.begin >= begin && mapping.end <= end) {
      total += mapping.anon_huge_pages_kb;
    }
  }
  return total;
}

TEST(HugePagesTest, AdvisedFreshMemoryIsBackedByHugePages) {
  const std::string mode = test::TransparentHugePageMode();
  if (mode == "never") {
    GTEST_SKIP() << "transparent huge pages are off on this host (\"" << mode
                 << "\"): the advice cannot be observed";
  }
  constexpr size_t kBytes = size_t{16} << 20;
  void* memory = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  // Misaligned on purpose: only the aligned interior may be advised.
  char* data = static_cast<char*>(memory) + 4096;
  AdviseHugePages(data, kBytes - 4096);
  for (size_t i = 0; i < kBytes - 4096; i += 4096) data[i] = 1;
  const auto begin = reinterpret_cast<uintptr_t>(memory);
  const int64_t huge_kb = AnonHugePagesKb(begin, begin + kBytes);
  munmap(memory, kBytes);
  // At least one 2 MiB page of the 12 MiB aligned interior.
  EXPECT_GE(huge_kb, 2048) << "THP mode \"" << mode << "\"";
}

TEST(HugePagesTest, SmallOrEmptyBuffersAreLeftAlone) {
  char small[64] = {};
  AdviseHugePages(small, sizeof(small));
  AdviseHugePages(nullptr, 0);
  EXPECT_EQ(small[0], 0);
}

}  // namespace
}  // namespace attnserve::wire
