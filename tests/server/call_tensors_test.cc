// Resident tensors on the byte-level path: what a call keeps shares the
// buffers the call already has (the kernel's outputs, the received inputs'
// one copy) instead of copying them.
#include "server/call_tensors.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/tensor.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/received_bytes.h"
#include "attnserve/wire/request_payloads.h"
#include "google/protobuf/map.h"
#include "gtest/gtest.h"
#include "server/memory_budget.h"
#include "server/proto_convert.h"
#include "server/tensor_store.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;

constexpr int kData = v1::Tensor::kDataFieldNumber;

class CallTensorsTest : public ::testing::Test {
 protected:
  static TensorStoreOptions Options() {
    TensorStoreOptions options;
    options.expiry_thread = false;
    return options;
  }

  // The stored tensor the call recorded under `field`.
  ResidentTensorPtr Stored(const CallTensors& tensors,
                           const std::string& field) {
    google::protobuf::Map<std::string, std::string> handles;
    tensors.FillHandles(&handles);
    EXPECT_EQ(handles.count(field), 1u) << field;
    absl::StatusOr<ResidentTensorPtr> tensor =
        store_.Find("owner", handles[field], "handle", TensorStore::kUseGet);
    EXPECT_THAT(tensor, IsOk());
    return tensor.ok() ? *tensor : nullptr;
  }

  // A request whose query carries `bytes` bytes of data, as received: the
  // message decoded without its payloads, which `payloads` copies on use.
  void Receive(uint64_t bytes) {
    v1::FlashAttentionScoreRequest request;
    request.mutable_retention()->set_keep(true);
    v1::Tensor* query = request.mutable_query();
    query->set_dtype(v1::DATA_TYPE_UINT8);
    query->add_shape(static_cast<int64_t>(bytes));
    query->set_data(std::string(bytes, '\x07'));
    sent_ = request.SerializeAsString();
    wire::ReceivedBytes received({absl::string_view(sent_)});
    wire::ReceivedPayloads ranges;
    ASSERT_THAT(wire::DecodeMessage(received, &request_, &ranges), IsOk());
    ASSERT_TRUE(request_.query().data().empty());
    payloads_ = wire::RequestPayloads(received, std::move(ranges), &pool_);
  }

  MemoryBudget budget_{0};
  TensorStore store_{Options(), &budget_};
  core::BufferPool pool_;
  std::string sent_;
  v1::FlashAttentionScoreRequest request_;
  wire::RequestPayloads payloads_;
};

TEST_F(CallTensorsTest, KeptOutputIsSentFromTheStoredBuffer) {
  v1::TensorRetention retention;
  retention.set_keep(true);
  CallTensors tensors(&store_, "owner", retention);
  wire::OutgoingPayloads outgoing;
  tensors.SetPayloads(nullptr, &outgoing);
  ASSERT_THAT(tensors.CheckRetention(), IsOk());
  const uint64_t bytes = uint64_t{4} << 20;
  ASSERT_THAT(tensors.ReserveKept(v1::FlashAttentionScoreRequest(), bytes),
              IsOk());

  core::HostTensor output =
      core::MakeHostTensor(core::DType::kFloat32, {1 << 20}, &pool_);
  const char* written = output.bytes.data();
  v1::Tensor out;
  tensors.Put("attention_out", std::move(output), &out);

  EXPECT_TRUE(out.data().empty());
  const core::Buffer* sent = outgoing.Find(out, kData);
  ASSERT_NE(sent, nullptr);
  EXPECT_EQ(sent->data(), written);
  ResidentTensorPtr stored = Stored(tensors, "attention_out");
  ASSERT_NE(stored, nullptr);
  EXPECT_EQ(stored->data(), written);
  EXPECT_EQ(store_.bytes(), bytes);
}

TEST_F(CallTensorsTest, KeptInputIsTheOneCopyOfItsReceivedBytes) {
  const uint64_t bytes = uint64_t{2} << 20;
  ASSERT_NO_FATAL_FAILURE(Receive(bytes));
  CallTensors tensors(&store_, "owner", request_.retention());
  tensors.SetPayloads(&payloads_, nullptr);
  ASSERT_THAT(tensors.CheckRetention(), IsOk());
  absl::StatusOr<core::TensorView> view =
      ToTensorView(request_.query(), "query", &tensors, &payloads_);
  ASSERT_THAT(view, IsOk());
  ASSERT_THAT(tensors.ReserveKept(request_, 0), IsOk());
  payloads_.ReleaseReceived();
  tensors.KeepInputs(request_);

  ResidentTensorPtr stored = Stored(tensors, "query");
  ASSERT_NE(stored, nullptr);
  EXPECT_EQ(stored->data(), view->data);
  EXPECT_EQ(stored->size(), bytes);
  EXPECT_EQ(payloads_.copied_bytes(), bytes);
  EXPECT_EQ(store_.bytes(), bytes);
}

// A tensor whose pooled block is more than twice its size (an idle block
// reused for a smaller request) would pin the whole block: the store keeps a
// copy of its own size instead.
TEST_F(CallTensorsTest, TensorInAnOversizedBlockIsStoredCompact) {
  // An idle 256 KiB block, which the pool reuses for 100 KiB.
  pool_.Acquire(size_t{256} << 10);
  const uint64_t bytes = uint64_t{100} << 10;
  ASSERT_NO_FATAL_FAILURE(Receive(bytes));
  CallTensors tensors(&store_, "owner", request_.retention());
  tensors.SetPayloads(&payloads_, nullptr);
  ASSERT_THAT(tensors.CheckRetention(), IsOk());
  absl::StatusOr<core::TensorView> view =
      ToTensorView(request_.query(), "query", &tensors, &payloads_);
  ASSERT_THAT(view, IsOk());
  ASSERT_THAT(tensors.ReserveKept(request_, 0), IsOk());
  tensors.KeepInputs(request_);

  ASSERT_EQ(payloads_.Get(request_.query(), kData)->capacity(),
            size_t{256} << 10);
  ResidentTensorPtr stored = Stored(tensors, "query");
  ASSERT_NE(stored, nullptr);
  EXPECT_NE(stored->data(), view->data);
  EXPECT_EQ(absl::string_view(stored->data(), stored->size()),
            std::string(bytes, '\x07'));
  EXPECT_EQ(store_.bytes(), bytes);
}

}  // namespace
}  // namespace attnserve::server
