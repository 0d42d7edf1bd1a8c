// PutTensor, GetTensor and DeleteTensor on a real in-process server: the
// stream protocol, its refusals, the memory the store holds (and frees when
// an upload is cancelled, runs out of time or is cut by the drain), owners
// and time to live; the bytes path (uploads into pooled memory, downloads
// sent from the stored tensor, the client receiving into reused memory)
// equal bit for bit to protobuf's.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "attnserve/client/client.h"
#include "attnserve/client/tensor_helpers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/call_tracker.h"
#include "tests/server/fake_clock.h"
#include "tests/server/resident_support.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server::testing {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// A FLOAT32 tensor of `n` reproducible values.
v1::Tensor Values(const std::vector<int64_t>& shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values;
  for (double v : RandomValues(n, seed))
    values.push_back(static_cast<float>(v));
  return Fp32Tensor(shape, values);
}

// Waits until `f()` holds (up to 10 s).
template <typename F>
bool Eventually(F f) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!f()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// A PutTensor stream that the test drives message by message.
class Upload {
 public:
  Upload(v1::AttentionService::Stub& stub, const v1::Tensor& header,
         absl::Duration deadline = absl::Seconds(60)) {
    SetTestDeadline(&context_, deadline);
    writer_ = stub.PutTensor(&context_, &response_);
    v1::PutTensorRequest first;
    first.mutable_tensor()->set_dtype(header.dtype());
    *first.mutable_tensor()->mutable_shape() = header.shape();
    writer_->Write(first);
  }
  bool Send(const std::string& chunk) {
    v1::PutTensorRequest message;
    message.set_chunk(chunk);
    return writer_->Write(message);
  }
  bool Send(const v1::PutTensorRequest& message) {
    return writer_->Write(message);
  }
  // The call's status; `close` first tells the server that nothing more
  // is coming (without it, waits for the server to end the call).
  grpc::Status Finish(bool close = true) {
    if (close) writer_->WritesDone();
    return writer_->Finish();
  }
  grpc::ClientContext& context() { return context_; }
  const v1::PutTensorResponse& response() const { return response_; }

 private:
  grpc::ClientContext context_;
  v1::PutTensorResponse response_;
  std::unique_ptr<grpc::ClientWriter<v1::PutTensorRequest>> writer_;
};

class TensorRpcsTest : public ::testing::Test {
 protected:
  TensorStore& store() { return *server_.server().tensor_store(); }
  TestServer server_;
};

TEST_F(TensorRpcsTest, PutThenGetReturnsTheSameBytesWhateverTheChunks) {
  ASSERT_TRUE(server_.started());
  const v1::Tensor tensor = Values({3, 1000, 7}, 1);  // 84000 bytes.
  for (const size_t chunk : {size_t{1} << 20, size_t{4096}, size_t{777}}) {
    SCOPED_TRACE(chunk);
    absl::StatusOr<v1::PutTensorResponse> put =
        PutRaw(server_.stub(), tensor, chunk, /*ttl_seconds=*/120);
    ASSERT_THAT(put, IsOk());
    EXPECT_THAT(put->handle(), MatchesRegex("[0-9a-f]{32}"));
    EXPECT_EQ(put->bytes(), 84000u);
    EXPECT_EQ(put->expires_in_seconds(), 120);
    absl::StatusOr<v1::Tensor> back = GetRaw(server_.stub(), put->handle());
    ASSERT_THAT(back, IsOk());
    EXPECT_EQ(back->dtype(), v1::DATA_TYPE_FLOAT32);
    EXPECT_THAT(back->shape(), ElementsAre(3, 1000, 7));
    EXPECT_TRUE(back->data() == tensor.data());
  }
  EXPECT_EQ(store().entries(), 3);
  EXPECT_EQ(store().bytes(), 3u * 84000u);
}

// Every dtype, and sizes whose chunks are copied into the message (below
// 64 KiB), sent as slices of the stored tensor, and split over messages
// (above the 4 MiB chunk): the client's upload (chunks lent from its tensor)
// and download (into a reused tensor) against the generated stub's.
TEST_F(TensorRpcsTest, TheClientsBytesPathEqualsTheGeneratedStubBitForBit) {
  ASSERT_TRUE(server_.started());
  const Client client(server_.channel());
  struct Case {
    v1::DataType dtype;
    std::vector<int64_t> shape;
  };
  uint32_t seed = 10;
  for (const Case& c : {Case{v1::DATA_TYPE_FLOAT32, {1, 1000}},
                        Case{v1::DATA_TYPE_FLOAT16, {3, 50000}},
                        Case{v1::DATA_TYPE_BFLOAT16, {5, 1 << 20}},
                        Case{v1::DATA_TYPE_FLOAT32, {5, 1 << 20}}}) {
    SCOPED_TRACE(absl::StrCat(c.dtype, " ", c.shape.back()));
    const v1::Tensor tensor =
        MakeRandomTensor(c.shape, c.dtype, ++seed).value();
    absl::StatusOr<v1::PutTensorResponse> by_client = client.PutTensor(tensor);
    ASSERT_THAT(by_client, IsOk());
    absl::StatusOr<v1::PutTensorResponse> by_stub =
        PutRaw(server_.stub(), tensor);
    ASSERT_THAT(by_stub, IsOk());
    for (const std::string& handle : {by_client->handle(), by_stub->handle()}) {
      absl::StatusOr<v1::Tensor> stub_got = GetRaw(server_.stub(), handle);
      ASSERT_THAT(stub_got, IsOk());
      EXPECT_TRUE(stub_got->data() == tensor.data());
      EXPECT_EQ(stub_got->dtype(), c.dtype);
      v1::Tensor reused;
      ASSERT_THAT(client.GetTensor(handle, &reused), IsOk());
      const char* const first = reused.data().data();
      reused.mutable_data()->assign(reused.data().size(), '\x5a');
      ASSERT_THAT(client.GetTensor(handle, &reused), IsOk());
      EXPECT_EQ(reused.data().data(), first)
          << "the second download did not land in the first one's memory";
      EXPECT_TRUE(reused.data() == tensor.data());
      EXPECT_EQ(reused.dtype(), c.dtype);
      EXPECT_THAT(reused.shape(), ElementsAre(c.shape[0], c.shape[1]));
    }
  }
  // A smaller tensor into the same Tensor: its own bytes, nothing left over.
  const v1::Tensor small = Values({10, 7}, 99);
  absl::StatusOr<v1::PutTensorResponse> put = client.PutTensor(small);
  ASSERT_THAT(put, IsOk());
  v1::Tensor into =
      MakeRandomTensor({1 << 20}, v1::DATA_TYPE_FLOAT32, 5).value();
  ASSERT_THAT(client.GetTensor(put->handle(), &into), IsOk());
  EXPECT_TRUE(into.data() == small.data());
  EXPECT_THAT(into.shape(), ElementsAre(10, 7));
  EXPECT_THAT(client.GetTensor("00000000000000000000000000000000", &into),
              StatusIs(absl::StatusCode::kNotFound));
}

// An upload lands in the pooled memory a deleted tensor gave back (warm),
// and holds its own bytes, not what the block held before.
TEST_F(TensorRpcsTest, AnUploadReusesThePooledMemoryADeletedTensorGaveBack) {
  ASSERT_TRUE(server_.started());
  const core::BufferPool& pool = server_.server().engine().buffer_pool();
  absl::StatusOr<v1::PutTensorResponse> put =
      PutRaw(server_.stub(), Values({2 << 20}, 7));  // 8 MiB.
  ASSERT_THAT(put, IsOk());
  const core::BufferPoolStats before = pool.stats();
  EXPECT_GE(before.in_use_bytes, uint64_t{8} << 20);
  ASSERT_THAT(DeleteRaw(server_.stub(), put->handle()), IsOk());
  EXPECT_GE(pool.stats().idle_bytes, uint64_t{8} << 20);

  const v1::Tensor again = Values({2 << 20}, 8);
  put = PutRaw(server_.stub(), again);
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(pool.stats().reused, before.reused + 1);
  absl::StatusOr<v1::Tensor> back = GetRaw(server_.stub(), put->handle());
  ASSERT_THAT(back, IsOk());
  EXPECT_TRUE(back->data() == again.data());
}

TEST_F(TensorRpcsTest, GetStreamsInChunksOfTheConfiguredSize) {
  ServerOptions options = TestServer::DefaultOptions();
  options.tensor_chunk_bytes = 10000;
  TestServer server(options);
  const v1::Tensor tensor = Values({25000}, 2);  // 100000 bytes.
  absl::StatusOr<v1::PutTensorResponse> put = PutRaw(server.stub(), tensor);
  ASSERT_THAT(put, IsOk());
  int messages = 0;
  absl::StatusOr<v1::Tensor> back =
      GetRaw(server.stub(), put->handle(), "", &messages);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(messages, 10);
  EXPECT_TRUE(back->data() == tensor.data());
}

TEST_F(TensorRpcsTest, AnEmptyTensorRoundTrips) {
  v1::Tensor empty;
  empty.set_dtype(v1::DATA_TYPE_BFLOAT16);
  empty.add_shape(0);
  empty.add_shape(4);
  absl::StatusOr<v1::PutTensorResponse> put = PutRaw(server_.stub(), empty);
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(put->bytes(), 0u);
  absl::StatusOr<v1::Tensor> back = GetRaw(server_.stub(), put->handle());
  ASSERT_THAT(back, IsOk());
  EXPECT_THAT(back->shape(), ElementsAre(0, 4));
  EXPECT_EQ(back->dtype(), v1::DATA_TYPE_BFLOAT16);
}

TEST_F(TensorRpcsTest, DeleteFreesTheTensorAndUnknownHandlesAreNoError) {
  absl::StatusOr<v1::PutTensorResponse> put =
      PutRaw(server_.stub(), Values({1000}, 3));
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(store().bytes(), 4000u);
  for (int i = 0; i < 2; ++i) {  // The second time the handle is unknown.
    EXPECT_THAT(DeleteRaw(server_.stub(), put->handle()), IsOk());
  }
  EXPECT_EQ(store().bytes(), 0u);
  EXPECT_THAT(GetRaw(server_.stub(), put->handle()),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("handle: this server holds no tensor")));
}

// The refusals of the upload protocol, each naming its field.
TEST_F(TensorRpcsTest, MalformedUploadsAreInvalidArgumentNamingTheField) {
  const v1::Tensor header = Values({4}, 4);
  struct Case {
    std::string name;
    std::vector<v1::PutTensorRequest> messages;
    std::string want;
  };
  std::vector<Case> cases;
  {
    v1::PutTensorRequest m;
    m.set_chunk("abcd");
    cases.push_back({"no tensor first", {m}, "tensor: the first message"});
  }
  {
    v1::PutTensorRequest m;
    *m.mutable_tensor() = header;  // With data.
    cases.push_back({"data in tensor", {m}, "tensor.data: must be empty"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(4);
    m.mutable_tensor()->set_handle("abc");
    cases.push_back({"handle", {m}, "tensor.handle: must be empty"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->add_shape(4);
    cases.push_back({"no dtype", {m}, "tensor.dtype"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(-4);
    cases.push_back({"negative dim", {m}, "tensor.shape[0]"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(1);
    m.set_chunk("12345");
    cases.push_back({"too many bytes", {m}, "chunk: the stream carries more"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(2);
    m.set_chunk("1234");
    cases.push_back(
        {"too few bytes", {m}, "chunk: the stream ended after 4 of the 8"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(2);
    v1::PutTensorRequest again = m;
    cases.push_back({"tensor twice", {m, again}, "tensor: only the first"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(2);
    m.set_ttl_seconds(0);
    cases.push_back({"ttl zero", {m}, "ttl_seconds: must be at least 1"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT32);
    m.mutable_tensor()->add_shape(2);
    m.set_ttl_seconds(100000);
    cases.push_back({"ttl too long", {m}, "--tensor_max_ttl"});
  }
  {
    v1::PutTensorRequest m;
    m.mutable_tensor()->set_dtype(v1::DATA_TYPE_UINT8);
    m.mutable_tensor()->add_shape(int64_t{1} << 40);
    cases.push_back({"over the element limit", {m}, "--max_tensor_elements"});
  }
  cases.push_back({"empty stream", {}, "tensor: the stream ended before"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::PutTensorResponse response;
    auto writer = server_.stub().PutTensor(&context, &response);
    for (const v1::PutTensorRequest& m : c.messages) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT)
        << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.want));
  }
  EXPECT_EQ(store().bytes(), 0u);
  EXPECT_EQ(store().entries(), 0);
}

TEST(TensorRpcsBudgetTest, AnUploadThatCannotFitIsRefusedBeforeItsData) {
  ServerOptions options = TestServer::DefaultOptions();
  options.memory_budget_bytes = 1 << 20;
  TestServer server(options);
  v1::Tensor header;
  header.set_dtype(v1::DATA_TYPE_FLOAT32);
  header.add_shape(1 << 19);  // 2 MiB declared.
  // Only the first message is sent: the answer comes without any data.
  Upload upload(server.stub(), header);
  grpc::Status status = upload.Finish();
  EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(),
              AllOf(HasSubstr("storing 2097152 bytes of tensors"),
                    HasSubstr("more than the whole budget of 1048576")));

  // Half the budget stored; then 600 KiB more do not fit: "free" is said.
  ASSERT_THAT(PutRaw(server.stub(), Values({1 << 17}, 5)), IsOk());
  header.set_shape(0, 600 << 8);
  Upload second(server.stub(), header);
  status = second.Finish();
  EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(
      status.error_message(),
      AllOf(HasSubstr("524288 by resident tensors"), HasSubstr("524288 free")));
}

TEST(TensorRpcsBudgetTest, TheStoreCapRefusesWhatTheBudgetWouldTake) {
  ServerOptions options = TestServer::DefaultOptions();
  options.tensor_store_bytes = 10000;
  TestServer server(options);
  ASSERT_THAT(PutRaw(server.stub(), Values({2000}, 6)), IsOk());
  EXPECT_THAT(PutRaw(server.stub(), Values({1000}, 7)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("tensor store"),
                             HasSubstr("2000 of its 10000 bytes are free"))));
}

TEST_F(TensorRpcsTest, ACancelledUploadFreesWhatItReceived) {
  const v1::Tensor header = Values({1 << 18}, 8);  // 1 MiB declared.
  Upload upload(server_.stub(), header);
  ASSERT_TRUE(upload.Send(header.data().substr(0, 300000)));
  ASSERT_TRUE(Eventually([&] { return store().bytes() == (1u << 20); }))
      << store().bytes();
  upload.context().TryCancel();
  EXPECT_EQ(upload.Finish().error_code(), grpc::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return store().bytes() == 0; }))
      << store().bytes();
  EXPECT_EQ(store().entries(), 0);
}

TEST_F(TensorRpcsTest, AnUploadPastItsDeadlineFreesWhatItReceived) {
  const v1::Tensor header = Values({1 << 18}, 9);
  Upload upload(server_.stub(), header, absl::Milliseconds(700));
  ASSERT_TRUE(upload.Send(header.data().substr(0, 300000)));
  ASSERT_TRUE(Eventually([&] { return store().bytes() == (1u << 20); }));
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(upload.Finish().error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_TRUE(Eventually([&] { return store().bytes() == 0; }))
      << store().bytes();
}

TEST(TensorRpcsDrainTest, UploadsFinishWithinTheDrainOrAreFreed) {
  TestServer server;
  TensorStore* store = server.server().tensor_store();
  const v1::Tensor tensor = Values({1 << 16}, 10);  // 256 KiB.
  // One upload finishes during the drain, the other never does.
  Upload finishing(server.stub(), tensor);
  Upload stalled(server.stub(), tensor);
  ASSERT_TRUE(finishing.Send(tensor.data().substr(0, 1000)));
  ASSERT_TRUE(stalled.Send(tensor.data().substr(0, 1000)));
  ASSERT_TRUE(Eventually([&] { return store->bytes() == 2u * (1 << 18); }));
  std::thread drain([&] { server.server().Shutdown(absl::Seconds(2)); });
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_TRUE(finishing.Send(tensor.data().substr(1000)));
  EXPECT_TRUE(finishing.Finish().ok());
  EXPECT_EQ(stalled.Finish(/*close=*/false).error_code(), grpc::CANCELLED);
  drain.join();
  EXPECT_EQ(store->bytes(), 1u << 18);  // Only the finished one is stored.
  EXPECT_EQ(store->entries(), 1);
}

TEST_F(TensorRpcsTest, NewUploadsAreRefusedWhileDraining) {
  const v1::Tensor tensor = Values({10}, 11);
  Upload holding(server_.stub(), tensor);  // Keeps the drain waiting.
  ASSERT_TRUE(Eventually([&] { return server_.server().in_flight() == 1; }));
  std::thread drain([&] { server_.server().Shutdown(absl::Seconds(3)); });
  ASSERT_TRUE(Eventually([&] {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::GetServerInfoResponse info;
    return server_.stub()
               .GetServerInfo(&context, v1::GetServerInfoRequest(), &info)
               .error_code() == grpc::UNAVAILABLE;
  }));
  EXPECT_THAT(PutRaw(server_.stub(), tensor),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("draining")));
  ASSERT_TRUE(holding.Send(tensor.data()));
  EXPECT_TRUE(holding.Finish().ok());
  drain.join();
}

TEST(TensorRpcsTtlTest, ATensorExpiresWhenItsTtlPassesWithoutUse) {
  FakeClock clock(absl::Now());
  ServerOptions options = TestServer::DefaultOptions();
  options.clock = &clock;
  options.tensor_ttl = absl::Seconds(30);
  TestServer server(options);
  absl::StatusOr<v1::PutTensorResponse> by_default =
      PutRaw(server.stub(), Values({10}, 12));
  absl::StatusOr<v1::PutTensorResponse> short_lived =
      PutRaw(server.stub(), Values({10}, 13), 1 << 20, /*ttl_seconds=*/5);
  ASSERT_THAT(by_default, IsOk());
  ASSERT_THAT(short_lived, IsOk());
  EXPECT_EQ(by_default->expires_in_seconds(), 30);
  clock.Advance(absl::Seconds(4));
  ASSERT_THAT(GetRaw(server.stub(), short_lived->handle()), IsOk());  // Used.
  clock.Advance(absl::Seconds(4));  // 8 s after the put, 4 after the use.
  ASSERT_THAT(GetRaw(server.stub(), short_lived->handle()), IsOk());
  clock.Advance(absl::Seconds(6));
  EXPECT_THAT(GetRaw(server.stub(), short_lived->handle()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GetRaw(server.stub(), by_default->handle()), IsOk());
  // The expiry thread follows the clock within a second.
  EXPECT_TRUE(Eventually(
      [&] { return server.server().tensor_store()->entries() == 1; }));
  EXPECT_EQ(server.server().tensor_store()->bytes(), 40u);
}

constexpr char kTokenA[] = "token-a-0123456789abcdef";
constexpr char kTokenB[] = "token-b-0123456789abcdef";

TEST(TensorRpcsOwnerTest, AnotherTokenGetsNotFoundAsForAnUnknownHandle) {
  const std::string tokens =
      absl::StrCat(::testing::TempDir(), "/resident_tokens_", getpid());
  {
    std::ofstream out(tokens);
    out << kTokenA << "\n" << kTokenB << "\n";
  }
  ServerOptions options = TestServer::DefaultOptions();
  options.auth_token_file = tokens;
  TestServer server(options);
  const std::string a = absl::StrCat("Bearer ", kTokenA);
  const std::string b = absl::StrCat("Bearer ", kTokenB);
  absl::StatusOr<v1::PutTensorResponse> put =
      PutRaw(server.stub(), Values({10}, 14), 1 << 20, std::nullopt, a);
  ASSERT_THAT(put, IsOk());
  absl::StatusOr<v1::Tensor> foreign = GetRaw(server.stub(), put->handle(), b);
  absl::StatusOr<v1::Tensor> unknown =
      GetRaw(server.stub(), std::string(32, 'f'), b);
  ASSERT_THAT(foreign, StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(unknown, StatusIs(absl::StatusCode::kNotFound));
  // The same answer, apart from the handle it repeats.
  std::string foreign_message(foreign.status().message());
  std::string unknown_message(unknown.status().message());
  foreign_message.replace(foreign_message.find(put->handle()), 32,
                          std::string(32, 'f'));
  EXPECT_EQ(foreign_message, unknown_message);
  // B's delete does not touch A's tensor.
  ASSERT_THAT(DeleteRaw(server.stub(), put->handle(), b), IsOk());
  EXPECT_THAT(GetRaw(server.stub(), put->handle(), a), IsOk());
  // Without a token nothing is served at all.
  EXPECT_THAT(GetRaw(server.stub(), put->handle()),
              StatusIs(absl::StatusCode::kUnauthenticated));
  std::remove(tokens.c_str());
}

TEST_F(TensorRpcsTest, EveryResponseNamesTheInstance) {
  const std::string instance = server_.server().instance_id();
  EXPECT_THAT(instance, MatchesRegex(".+-[0-9]+-[0-9a-f]{8}"));
  std::vector<std::string> seen;
  {
    grpc::ClientContext context;
    SetTestDeadline(&context);
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(server_.stub()
                    .GetServerInfo(&context, v1::GetServerInfoRequest(), &info)
                    .ok());
    seen.push_back(Trailing(context, kInstanceKey));
  }
  {
    grpc::ClientContext context;  // An error, from a streaming call.
    SetTestDeadline(&context);
    v1::GetTensorRequest request;
    request.set_handle("nope");
    auto reader = server_.stub().GetTensor(&context, request);
    v1::GetTensorResponse message;
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::NOT_FOUND);
    seen.push_back(Trailing(context, kInstanceKey));
  }
  EXPECT_THAT(seen, ElementsAre(instance, instance));
  TestServer other;
  EXPECT_NE(other.server().instance_id(), instance);
}

}  // namespace
}  // namespace attnserve::server::testing
