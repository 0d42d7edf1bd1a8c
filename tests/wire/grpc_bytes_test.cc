// Encoded messages as gRPC byte buffers and back (grpc_bytes.h): payload
// pieces by reference, a message's own bytes lent and counted until gRPC
// lets go, everything else copied; the bytes always the message's protobuf
// encoding.
#include "attnserve/wire/grpc_bytes.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "attnserve/core/buffer.h"
#include "attnserve/v1/attention.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::wire {
namespace {

using ::attnserve::test::StatusIs;

v1::Tensor TensorOfBytes(size_t n) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::DATA_TYPE_FLOAT32);
  tensor.add_shape(static_cast<int64_t>(n / 4));
  std::string data(n, '\0');
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>(i * 7 + 3);
  tensor.set_data(std::move(data));
  return tensor;
}

std::vector<grpc::Slice> SlicesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  return slices;
}

std::string Joined(const grpc::ByteBuffer& buffer) {
  std::string bytes;
  for (const grpc::Slice& slice : SlicesOf(buffer)) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

bool AnySliceStartsAt(const grpc::ByteBuffer& buffer, const char* at) {
  for (const grpc::Slice& slice : SlicesOf(buffer)) {
    if (reinterpret_cast<const char*>(slice.begin()) == at) return true;
  }
  return false;
}

TEST(GrpcBytesTest, LentBytesAreTheMessagesOwnAndCountedUntilReleased) {
  const v1::Tensor tensor = TensorOfBytes(size_t{1} << 20);
  const EncodedMessage encoded = EncodeMessage(tensor, OutgoingPayloads());
  SliceLoans loans;
  {
    const grpc::ByteBuffer buffer = ToByteBuffer(encoded, &loans);
    EXPECT_EQ(loans.outstanding(), 1);
    EXPECT_TRUE(AnySliceStartsAt(buffer, tensor.data().data()));
    EXPECT_TRUE(Joined(buffer) == tensor.SerializeAsString());
    {
      const grpc::ByteBuffer copy = buffer;  // gRPC's own references.
      EXPECT_EQ(loans.outstanding(), 1);
    }
  }
  EXPECT_EQ(loans.outstanding(), 0);
  loans.Wait();  // Returns at once.
}

TEST(GrpcBytesTest, WithoutLoansAndBelowTheThresholdBytesAreCopied) {
  for (size_t n : {size_t{1} << 20, kMinLentBytes / 2}) {
    const v1::Tensor tensor = TensorOfBytes(n);
    const EncodedMessage encoded = EncodeMessage(tensor, OutgoingPayloads());
    SliceLoans loans;
    const grpc::ByteBuffer buffer =
        ToByteBuffer(encoded, n < kMinLentBytes ? &loans : nullptr);
    EXPECT_EQ(loans.outstanding(), 0);
    EXPECT_FALSE(AnySliceStartsAt(buffer, tensor.data().data()));
    EXPECT_TRUE(Joined(buffer) == tensor.SerializeAsString()) << n;
  }
}

TEST(GrpcBytesTest, PayloadPiecesKeepTheirBufferAlive) {
  v1::Tensor tensor = TensorOfBytes(size_t{256} << 10);
  const std::string want = tensor.SerializeAsString();
  core::Buffer payload(tensor.data().data(), tensor.data().size());
  const char* const at = payload.data();
  tensor.clear_data();
  grpc::ByteBuffer buffer;
  {
    OutgoingPayloads payloads;
    payloads.Set(&tensor, v1::Tensor::kDataFieldNumber, std::move(payload));
    buffer = ToByteBuffer(EncodeMessage(tensor, payloads));
  }
  // The payloads (and their owner) are gone; the slice still owns the bytes.
  EXPECT_TRUE(AnySliceStartsAt(buffer, at));
  EXPECT_TRUE(Joined(buffer) == want);
}

TEST(GrpcBytesTest, WaitBlocksUntilTheLastLentSliceIsReleased) {
  const v1::Tensor tensor = TensorOfBytes(size_t{1} << 20);
  const EncodedMessage encoded = EncodeMessage(tensor, OutgoingPayloads());
  SliceLoans loans;
  auto buffer =
      std::make_unique<grpc::ByteBuffer>(ToByteBuffer(encoded, &loans));
  const auto start = std::chrono::steady_clock::now();
  std::thread holder([b = std::move(buffer)]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    b.reset();
  });
  loans.Wait();
  EXPECT_GE(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(90));
  EXPECT_EQ(loans.outstanding(), 0);
  holder.join();
}

TEST(GrpcBytesTest, ALentBytesFieldAfterAHeadIsTheMessagesEncoding) {
  v1::PutTensorRequest message;
  message.mutable_tensor()->set_dtype(v1::DATA_TYPE_BFLOAT16);
  message.mutable_tensor()->add_shape(3);
  message.set_ttl_seconds(60);
  const std::string head = message.SerializeAsString();
  for (size_t n : {size_t{0}, size_t{100}, size_t{1} << 20}) {
    const std::string chunk = TensorOfBytes(n).data();
    SliceLoans loans;
    {
      const grpc::ByteBuffer buffer = WithLentBytesField(
          head, v1::PutTensorRequest::kChunkFieldNumber, chunk, &loans);
      EXPECT_EQ(loans.outstanding(), n >= kMinLentBytes ? 1 : 0) << n;
      EXPECT_EQ(AnySliceStartsAt(buffer, chunk.data()), n >= kMinLentBytes);
      v1::PutTensorRequest parsed;
      ASSERT_TRUE(parsed.ParseFromString(Joined(buffer))) << n;
      EXPECT_EQ(parsed.tensor().dtype(), v1::DATA_TYPE_BFLOAT16);
      EXPECT_EQ(parsed.ttl_seconds(), 60u);
      EXPECT_TRUE(parsed.chunk() == chunk) << n;
    }
    EXPECT_EQ(loans.outstanding(), 0);
  }
}

TEST(GrpcBytesTest, ASharedBytesFieldHoldsItsOwnerUntilReleased) {
  v1::GetTensorResponse message;
  message.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT16);
  message.mutable_tensor()->add_shape(7);
  const std::string head = message.SerializeAsString();
  const std::string stored = TensorOfBytes(size_t{1} << 20).data();
  for (size_t n : {size_t{0}, size_t{100}, size_t{300} << 10}) {
    std::optional<grpc::ByteBuffer> buffer;
    const char* chunk = nullptr;
    {
      // The owner goes first: the slice alone keeps the bytes alive.
      core::Buffer owner(stored.data(), stored.size());
      chunk = owner.data() + 1000;
      buffer =
          WithSharedBytesField(head, v1::GetTensorResponse::kChunkFieldNumber,
                               absl::string_view(chunk, n), owner);
      EXPECT_EQ(owner.use_count(), n >= kMinLentBytes ? 2 : 1) << n;
    }
    EXPECT_EQ(AnySliceStartsAt(*buffer, chunk), n >= kMinLentBytes) << n;
    v1::GetTensorResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(Joined(*buffer))) << n;
    EXPECT_EQ(parsed.tensor().dtype(), v1::DATA_TYPE_FLOAT16);
    EXPECT_TRUE(parsed.chunk() == stored.substr(1000, n)) << n;
  }
}

TEST(GrpcBytesTest, AppendToAddsARangeAcrossSlices) {
  const ReceivedBytes bytes({"ab", "cde", "f"});
  std::string out = "x";
  bytes.AppendTo(ByteRange{1, 4}, &out);
  EXPECT_EQ(out, "xbcde");
  bytes.AppendTo(ByteRange{5, 0}, &out);
  EXPECT_EQ(out, "xbcde");
}

TEST(GrpcBytesTest, ReadSlicesViewsTheBytesAndRefusesAnInvalidBuffer) {
  const v1::Tensor tensor = TensorOfBytes(size_t{1} << 20);
  const grpc::ByteBuffer buffer =
      ToByteBuffer(EncodeMessage(tensor, OutgoingPayloads()));
  std::vector<grpc::Slice> slices;
  ReceivedBytes view;
  ASSERT_TRUE(ReadSlices(buffer, &slices, &view).ok());
  EXPECT_EQ(view.size(), tensor.ByteSizeLong());
  std::string bytes(view.size(), '\0');
  view.CopyTo(ByteRange{0, view.size()}, bytes.data());
  EXPECT_TRUE(bytes == tensor.SerializeAsString());

  EXPECT_THAT(ReadSlices(grpc::ByteBuffer(), &slices, &view),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace attnserve::wire
