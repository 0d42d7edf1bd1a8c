// The tensor store: handles, owners, time to live on a fake clock, the
// memory it holds, eviction.
#include "server/tensor_store.h"

#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::server::testing::FakeClock;

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class TensorStoreTest : public ::testing::Test {
 protected:
  TensorStoreOptions Options() {
    TensorStoreOptions options;
    options.clock = &clock_;
    options.expiry_thread = false;
    options.default_ttl = absl::Seconds(60);
    options.max_ttl = absl::Seconds(600);
    return options;
  }

  // Stores `bytes` bytes for `owner`, reserved in `store`.
  std::string Put(TensorStore& store, const std::string& owner, size_t bytes,
                  absl::Duration ttl = absl::Seconds(60)) {
    absl::StatusOr<MemoryReservation> memory = store.Reserve(bytes);
    EXPECT_THAT(memory, IsOk());
    auto tensor = std::make_shared<ResidentTensor>(
        core::DType::kUInt8, std::vector<int64_t>{static_cast<int64_t>(bytes)},
        core::Buffer(std::string(bytes, 'x').data(), bytes));
    tensor->memory = *std::move(memory);
    return store.Insert(owner, std::move(tensor), ttl, TensorStore::kViaPut);
  }

  FakeClock clock_;
  MemoryBudget budget_{1000};
};

TEST_F(TensorStoreTest, HandlesAre128RandomBitsInHex) {
  TensorStore store(Options(), &budget_);
  std::set<std::string> handles;
  for (int i = 0; i < 100; ++i) handles.insert(Put(store, "", 1));
  EXPECT_EQ(handles.size(), 100u);
  for (const std::string& handle : handles) {
    EXPECT_THAT(handle, MatchesRegex("[0-9a-f]{32}"));
  }
}

TEST_F(TensorStoreTest, FindsOnlyTheOwnersTensors) {
  TensorStore store(Options(), &budget_);
  const std::string handle = Put(store, "token:a", 8);
  absl::StatusOr<ResidentTensorPtr> found =
      store.Find("token:a", handle, "key.handle", TensorStore::kUseCompute);
  ASSERT_THAT(found, IsOk());
  EXPECT_EQ((*found)->size(), 8u);
  EXPECT_EQ(std::string((*found)->data(), 8), "xxxxxxxx");
  // Another owner is told exactly what a stranger with a made-up handle is.
  absl::StatusOr<ResidentTensorPtr> foreign =
      store.Find("token:b", handle, "key.handle", TensorStore::kUseCompute);
  absl::StatusOr<ResidentTensorPtr> unknown = store.Find(
      "token:b", std::string(32, '0'), "key.handle", TensorStore::kUseCompute);
  EXPECT_THAT(foreign, StatusIs(absl::StatusCode::kNotFound,
                                HasSubstr("key.handle: this server holds no "
                                          "tensor with handle")));
  EXPECT_THAT(unknown, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(store.Erase("token:b", handle));
  EXPECT_TRUE(store.Erase("token:a", handle));
  EXPECT_FALSE(store.Erase("token:a", handle));
  EXPECT_EQ(store.counters().not_found, 2u);
  EXPECT_EQ(store.counters().deletes, 1u);
}

TEST_F(TensorStoreTest, ExpiresAfterItsTtlAndEveryUseRestartsIt) {
  TensorStore store(Options(), &budget_);
  const std::string handle = Put(store, "", 10, absl::Seconds(30));
  EXPECT_EQ(budget_.used(MemoryBudget::kTensors), 10u);
  clock_.Advance(absl::Seconds(20));
  ASSERT_THAT(store.Find("", handle, "query.handle", TensorStore::kUseGet),
              IsOk());
  clock_.Advance(absl::Seconds(20));  // 40 s after the put, 20 after the use.
  EXPECT_EQ(store.SweepExpired(), 0);
  ASSERT_THAT(store.Find("", handle, "query.handle", TensorStore::kUseGet),
              IsOk());
  clock_.Advance(absl::Seconds(30));
  // Past its time: not found even before a sweep frees it.
  EXPECT_THAT(store.Find("", handle, "query.handle", TensorStore::kUseGet),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(store.SweepExpired(), 1);
  EXPECT_EQ(store.entries(), 0);
  EXPECT_EQ(budget_.used(MemoryBudget::kTensors), 0u);
  EXPECT_EQ(store.counters().expiries, 1u);
  EXPECT_EQ(store.counters().gets, 2u);
}

TEST_F(TensorStoreTest, TheExpiryThreadFreesExpiredTensorsWithoutBeingAsked) {
  TensorStoreOptions options;
  options.default_ttl = absl::Seconds(1);
  TensorStore store(options, &budget_);  // Wall clock, expiry thread on.
  Put(store, "", 10, absl::Seconds(1));
  Put(store, "", 20, absl::Seconds(600));
  EXPECT_EQ(store.entries(), 2);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (store.entries() > 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(store.entries(), 1);
  EXPECT_EQ(budget_.used(MemoryBudget::kTensors), 20u);
}

TEST_F(TensorStoreTest, TtlForChecksTheRequest) {
  TensorStore store(Options(), &budget_);
  EXPECT_EQ(*store.TtlFor(std::nullopt, "ttl_seconds"), absl::Seconds(60));
  EXPECT_EQ(*store.TtlFor(5, "ttl_seconds"), absl::Seconds(5));
  EXPECT_EQ(*store.TtlFor(600, "ttl_seconds"), absl::Seconds(600));
  EXPECT_THAT(store.TtlFor(0, "ttl_seconds"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be at least 1")));
  EXPECT_THAT(store.TtlFor(601, "retention.ttl_seconds"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("601 exceeds the server's maximum of "
                                       "600 seconds"),
                             HasSubstr("--tensor_max_ttl"))));
}

TEST_F(TensorStoreTest, StoringWhatDoesNotFitSaysHowMuchIsFree) {
  TensorStoreOptions options = Options();
  options.capacity_bytes = 100;
  TensorStore store(options, &budget_);
  Put(store, "", 70);
  EXPECT_THAT(store.Reserve(40),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("30 of its 100 bytes are free")));
  // The memory budget (1000) is the other limit.
  ASSERT_THAT(budget_.TryReserve(MemoryBudget::kRequests, 920), IsOk());
  EXPECT_THAT(store.Reserve(20), StatusIs(absl::StatusCode::kResourceExhausted,
                                          AllOf(HasSubstr("memory budget"),
                                                HasSubstr("10 free"))));
  budget_.Release(MemoryBudget::kRequests, 920);
}

TEST_F(TensorStoreTest, ATensorDeletedWhileInUseIsFreedWhenTheUserLetsGo) {
  TensorStore store(Options(), &budget_);
  const std::string handle = Put(store, "", 50);
  absl::StatusOr<ResidentTensorPtr> in_use =
      store.Find("", handle, "key.handle", TensorStore::kUseCompute);
  ASSERT_THAT(in_use, IsOk());
  EXPECT_TRUE(store.Erase("", handle));
  EXPECT_EQ(store.entries(), 0);
  EXPECT_EQ(budget_.used(MemoryBudget::kTensors), 50u);  // Still read.
  EXPECT_EQ(std::string((*in_use)->data(), 3), "xxx");
  in_use->reset();
  EXPECT_EQ(budget_.used(MemoryBudget::kTensors), 0u);
}

TEST_F(TensorStoreTest, EvictionFreesTheLeastRecentlyUsedIdleTensors) {
  TensorStoreOptions options = Options();
  options.capacity_bytes = 100;
  options.evict = true;
  TensorStore store(options, &budget_);
  const std::string a = Put(store, "", 40);
  clock_.Advance(absl::Seconds(1));
  const std::string b = Put(store, "", 40);
  clock_.Advance(absl::Seconds(1));
  // `b` is held by a running call, so the idle `a` goes although it was
  // used more recently.
  ASSERT_THAT(store.Find("", a, "a", TensorStore::kUseCompute), IsOk());
  absl::StatusOr<ResidentTensorPtr> held =
      store.Find("", b, "b", TensorStore::kUseCompute);
  ASSERT_THAT(held, IsOk());
  absl::StatusOr<MemoryReservation> room = store.Reserve(50);
  ASSERT_THAT(room, IsOk());
  EXPECT_THAT(store.Find("", a, "a", TensorStore::kUseCompute),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store.Find("", b, "b", TensorStore::kUseCompute), IsOk());
  EXPECT_EQ(store.counters().evictions, 1u);
  // Nothing idle is left to evict: refused.
  EXPECT_THAT(store.Reserve(50),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(TensorStoreTest, EvictionTakesTheOldestFirst) {
  TensorStoreOptions options = Options();
  options.capacity_bytes = 100;
  options.evict = true;
  TensorStore store(options, &budget_);
  const std::string a = Put(store, "", 40);
  clock_.Advance(absl::Seconds(1));
  const std::string b = Put(store, "", 40);
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(store.Find("", a, "a", TensorStore::kUseCompute), IsOk());
  ASSERT_THAT(store.Reserve(50), IsOk());  // Frees b, used longest ago.
  EXPECT_THAT(store.Find("", a, "a", TensorStore::kUseCompute), IsOk());
  EXPECT_THAT(store.Find("", b, "b", TensorStore::kUseCompute),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace attnserve::server
