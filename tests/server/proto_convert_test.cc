#include "server/proto_convert.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/received_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::Tensor MakeTensor(v1::DataType dtype, std::vector<int64_t> shape,
                      size_t bytes) {
  v1::Tensor t;
  t.set_dtype(dtype);
  for (int64_t d : shape) t.add_shape(d);
  t.set_data(std::string(bytes, '\0'));
  return t;
}

// A well-formed fp32 BSND request with B=1, S=2, N=1, D=4.
v1::FlashAttentionScoreRequest ValidForward() {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_key() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_value() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  r.set_head_num(1);
  r.set_input_layout("BSND");
  return r;
}

std::string FieldOf(const absl::Status& status) {
  return core::FieldOf(status).value_or("<none>");
}

TEST(ProtoConvertTest, TensorViewPointsIntoTheRequestBytes) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_BFLOAT16, {2, 3}, 12);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "query");
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->dtype, core::DType::kBFloat16);
  EXPECT_THAT(view->shape, ElementsAre(2, 3));
  EXPECT_EQ(view->data, t.data().data());
  EXPECT_EQ(view->size_bytes, 12u);
}

TEST(ProtoConvertTest, WrongByteLengthNamesTheDataField) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_FLOAT16, {2, 3}, 11);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "query");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("expected 12")));
  EXPECT_EQ(FieldOf(view.status()), "query.data");
}

TEST(ProtoConvertTest, AHandleThisServerDoesNotHoldIsNotFoundNamingTheField) {
  v1::FlashAttentionScoreRequest request = ValidForward();
  request.mutable_key()->clear_data();
  request.mutable_key()->set_handle("0123456789abcdef0123456789abcdef");
  EXPECT_THAT(ToForwardArgs(request).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("key.handle")));
}

TEST(ProtoConvertTest, UnspecifiedDtypeIsRejected) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_UNSPECIFIED, {1}, 4);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "key");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("DATA_TYPE_UNSPECIFIED")));
  EXPECT_EQ(FieldOf(view.status()), "key.dtype");
}

TEST(ProtoConvertTest, UnknownDtypeValueIsRejected) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_FLOAT32, {1}, 4);
  t.set_dtype(static_cast<v1::DataType>(42));
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "value");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("unknown DataType value 42")));
  EXPECT_EQ(FieldOf(view.status()), "value.dtype");
}

TEST(ProtoConvertTest, NegativeDimensionNamesItsIndex) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_FLOAT32, {2, -1, 4}, 0);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "value");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("must be >= 0, got -1")));
  EXPECT_EQ(FieldOf(view.status()), "value.shape[1]");
}

TEST(ProtoConvertTest, ElementCountOverflowIsRejected) {
  const int64_t big = int64_t{1} << 40;
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_UINT8, {big, big}, 0);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "atten_mask");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("overflows")));
  EXPECT_EQ(FieldOf(view.status()), "atten_mask.shape");
}

TEST(ProtoConvertTest, ByteSizeOverflowFromItemSizeIsRejected) {
  // 2^62 elements fit in int64 but 2^62 * 4 bytes do not.
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_FLOAT32, {int64_t{1} << 62}, 0);
  absl::StatusOr<core::TensorView> view = ToTensorView(t, "query");
  EXPECT_THAT(view, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("overflows")));
  EXPECT_EQ(FieldOf(view.status()), "query.shape");
}

TEST(ProtoConvertTest, ZeroSizedTensorWithNoBytesIsAccepted) {
  v1::Tensor t = MakeTensor(v1::DATA_TYPE_FLOAT32, {0, 1 << 30}, 0);
  EXPECT_THAT(ToTensorView(t, "query"), IsOk());
}

TEST(ProtoConvertTest, MissingRequiredTensorIsNamed) {
  v1::FlashAttentionScoreRequest r = ValidForward();
  r.clear_key();
  absl::StatusOr<core::ForwardArgs> args = ToForwardArgs(r);
  EXPECT_THAT(args, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("required")));
  EXPECT_EQ(FieldOf(args.status()), "key");

  v1::FlashAttentionScoreGradRequest g;
  *g.mutable_query() = r.query();
  *g.mutable_key() = r.query();
  *g.mutable_value() = r.query();
  absl::StatusOr<core::BackwardArgs> grad = ToBackwardArgs(g);
  EXPECT_THAT(grad, StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("required")));
  EXPECT_EQ(FieldOf(grad.status()), "dy");
}

TEST(ProtoConvertTest, UnsetOptionalsTakeTheDocumentedDefaults) {
  absl::StatusOr<core::ForwardArgs> args = ToForwardArgs(ValidForward());
  ASSERT_THAT(args, IsOk());
  const core::AttentionOptions& o = args->options;
  EXPECT_EQ(o.scale_value, 1.0);
  EXPECT_EQ(o.keep_prob, 1.0);
  EXPECT_EQ(o.pre_tokens, 2147483647);
  EXPECT_EQ(o.next_tokens, 2147483647);
  EXPECT_EQ(o.pse_type, 1);
  EXPECT_FALSE(o.seed.has_value());
  EXPECT_FALSE(o.offset.has_value());
  EXPECT_FALSE(o.pse.has_value());
  EXPECT_FALSE(o.atten_mask.has_value());
  EXPECT_FALSE(o.drop_mask.has_value());
  EXPECT_EQ(o.head_num, 1);
  EXPECT_EQ(o.input_layout, "BSND");
}

TEST(ProtoConvertTest, ExplicitZerosAreKeptDistinctFromUnset) {
  v1::FlashAttentionScoreRequest r = ValidForward();
  r.set_scale_value(0.125);
  r.set_keep_prob(0.5);
  r.set_pre_tokens(0);
  r.set_next_tokens(0);
  r.set_pse_type(0);
  r.set_seed(0);
  r.set_offset(7);
  r.set_sparse_mode(3);
  r.set_inner_precise(2);
  r.add_prefix(5);
  r.add_q_start_idx(-2);
  r.add_kv_start_idx(3);
  absl::StatusOr<core::ForwardArgs> args = ToForwardArgs(r);
  ASSERT_THAT(args, IsOk());
  const core::AttentionOptions& o = args->options;
  EXPECT_EQ(o.scale_value, 0.125);
  EXPECT_EQ(o.keep_prob, 0.5);
  EXPECT_EQ(o.pre_tokens, 0);
  EXPECT_EQ(o.next_tokens, 0);
  EXPECT_EQ(o.pse_type, 0);
  EXPECT_EQ(o.seed, uint64_t{0});
  EXPECT_EQ(o.offset, uint64_t{7});
  EXPECT_EQ(o.sparse_mode, 3);
  EXPECT_EQ(o.inner_precise, 2);
  EXPECT_THAT(o.prefix, ElementsAre(5));
  EXPECT_THAT(o.q_start_idx, ElementsAre(-2));
  EXPECT_THAT(o.kv_start_idx, ElementsAre(3));
}

TEST(ProtoConvertTest, OptionalTensorsAreViewedAndChecked) {
  v1::FlashAttentionScoreRequest r = ValidForward();
  *r.mutable_atten_mask() = MakeTensor(v1::DATA_TYPE_BOOL, {2, 2}, 4);
  absl::StatusOr<core::ForwardArgs> args = ToForwardArgs(r);
  ASSERT_THAT(args, IsOk());
  ASSERT_TRUE(args->options.atten_mask.has_value());
  EXPECT_EQ(args->options.atten_mask->dtype, core::DType::kBool);
  EXPECT_EQ(args->options.atten_mask->data, r.atten_mask().data().data());

  *r.mutable_pse() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 1, 2, 2}, 15);
  args = ToForwardArgs(r);
  EXPECT_THAT(args, StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(FieldOf(args.status()), "pse.data");
}

TEST(ProtoConvertTest, BackwardResidualsAreOptionalViews) {
  v1::FlashAttentionScoreRequest f = ValidForward();
  v1::FlashAttentionScoreGradRequest g;
  *g.mutable_query() = f.query();
  *g.mutable_key() = f.key();
  *g.mutable_value() = f.value();
  *g.mutable_dy() = f.query();
  g.set_head_num(1);
  g.set_input_layout("BSND");
  absl::StatusOr<core::BackwardArgs> args = ToBackwardArgs(g);
  ASSERT_THAT(args, IsOk());
  EXPECT_FALSE(args->softmax_max.has_value());
  EXPECT_FALSE(args->attention_in.has_value());
  EXPECT_EQ(args->options.pre_tokens, 2147483647);

  *g.mutable_softmax_max() =
      MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 1, 2, 8}, 64);
  *g.mutable_attention_in() = f.query();
  *g.mutable_softmax_sum() =
      MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 1, 2, 8}, 63);
  args = ToBackwardArgs(g);
  EXPECT_THAT(args, StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(FieldOf(args.status()), "softmax_sum.data");
  g.mutable_softmax_sum()->mutable_data()->push_back('\0');
  args = ToBackwardArgs(g);
  ASSERT_THAT(args, IsOk());
  EXPECT_TRUE(args->softmax_max.has_value());
  EXPECT_TRUE(args->softmax_sum.has_value());
  EXPECT_TRUE(args->attention_in.has_value());
}

TEST(ProtoConvertTest, HostTensorBytesBecomeAPayloadWithoutCopy) {
  core::HostTensor host = core::MakeHostTensor(core::DType::kFloat16, {4, 64});
  host.bytes[0] = 'x';
  const char* buffer = host.bytes.data();
  v1::Tensor out;
  wire::OutgoingPayloads payloads;
  MoveToProto(std::move(host), &out, &payloads);
  EXPECT_EQ(out.dtype(), v1::DATA_TYPE_FLOAT16);
  EXPECT_THAT(out.shape(), ElementsAre(4, 64));
  EXPECT_TRUE(out.data().empty());
  const core::Buffer* sent = payloads.Find(out, v1::Tensor::kDataFieldNumber);
  ASSERT_NE(sent, nullptr);
  ASSERT_EQ(sent->size(), 4u * 64u * 2u);
  EXPECT_EQ((*sent)[0], 'x');
  EXPECT_EQ(sent->data(), buffer);
}

TEST(ProtoConvertTest, HostTensorBytesAreCopiedIntoAMessageWithoutPayloads) {
  core::HostTensor host = core::MakeHostTensor(core::DType::kFloat16, {4, 64});
  host.bytes[0] = 'x';
  v1::Tensor out;
  MoveToProto(std::move(host), &out);
  EXPECT_THAT(out.shape(), ElementsAre(4, 64));
  ASSERT_EQ(out.data().size(), 4u * 64u * 2u);
  EXPECT_EQ(out.data()[0], 'x');
}

// A request decoded from bytes (the server's path): the view reads the
// payload's pooled copy, and a wrong size is refused before any copy.
TEST(ProtoConvertTest, ViewsReadReceivedPayloadsAfterTheirSizeIsChecked) {
  v1::Tensor t;
  t.set_dtype(v1::DATA_TYPE_FLOAT32);
  t.add_shape(2);
  t.add_shape(3);
  t.set_data(std::string(24, '\x01'));
  const std::string good = t.SerializeAsString();
  t.set_data(std::string(20, '\x01'));
  const std::string bad = t.SerializeAsString();
  core::BufferPool pool;
  for (const std::string* bytes : {&good, &bad}) {
    wire::ReceivedBytes received({absl::string_view(*bytes)});
    v1::Tensor decoded;
    wire::ReceivedPayloads ranges;
    ASSERT_THAT(wire::DecodeMessage(received, &decoded, &ranges), IsOk());
    EXPECT_TRUE(decoded.data().empty());
    wire::RequestPayloads payloads(received, std::move(ranges), &pool);
    absl::StatusOr<core::TensorView> view =
        ToTensorView(decoded, "query", nullptr, &payloads);
    if (bytes == &good) {
      ASSERT_THAT(view, IsOk());
      EXPECT_EQ(view->size_bytes, 24u);
      EXPECT_EQ(static_cast<const char*>(view->data)[23], 1);
      EXPECT_EQ(payloads.copied_bytes(), 24u);
    } else {
      EXPECT_EQ(core::FieldOf(view.status()), "query.data");
      EXPECT_EQ(payloads.copied_bytes(), 0u);
    }
  }
}

// The bytes of `message` as received in chunks of `size` bytes.
std::vector<absl::string_view> InChunks(const std::string& message,
                                        size_t size) {
  std::vector<absl::string_view> chunks;
  for (size_t at = 0; at < message.size(); at += size) {
    chunks.push_back(absl::string_view(message).substr(at, size));
  }
  return chunks;
}

// `request` serialized, received in 5-byte chunks and decoded as the server
// does: the tensors' data left in the received bytes.
template <typename Request>
struct ReceivedInChunks {
  explicit ReceivedInChunks(const Request& request)
      : message(request.SerializeAsString()) {
    wire::ReceivedBytes received(InChunks(message, 5));
    wire::ReceivedPayloads ranges;
    decoding = wire::DecodeMessage(received, &decoded, &ranges);
    payloads = wire::RequestPayloads(received, std::move(ranges), &pool);
  }

  std::string message;
  core::BufferPool pool;
  Request decoded;
  absl::Status decoding;
  wire::RequestPayloads payloads;
};

// The bytes a chunked view holds, joined.
std::string Joined(const core::TensorView& view) {
  EXPECT_NE(view.chunks, nullptr);
  if (view.chunks == nullptr) return "";
  std::string out(view.chunks->size(), '\0');
  view.chunks->CopyTo({0, out.size()}, out.data());
  return out;
}

// FlashAttention's query, key, value, dy and attention_in are left in the
// chunks they were received in (no copy); every other tensor is joined.
TEST(ProtoConvertTest, RowTensorsAreViewedWhereTheyWereReceived) {
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_key() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_value() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_dy() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_attention_in() =
      MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 1, 4}, 32);
  *r.mutable_softmax_max() =
      MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 1, 2, 8}, 64);
  *r.mutable_atten_mask() = MakeTensor(v1::DATA_TYPE_UINT8, {2, 2}, 4);
  for (v1::Tensor* t : {r.mutable_query(), r.mutable_key(), r.mutable_value(),
                        r.mutable_dy(), r.mutable_attention_in()}) {
    for (size_t i = 0; i < t->data().size(); ++i) {
      (*t->mutable_data())[i] = static_cast<char>(i * 7 + t->data().size());
    }
  }
  r.set_head_num(1);
  r.set_input_layout("BSND");
  ReceivedInChunks<v1::FlashAttentionScoreGradRequest> in(r);
  ASSERT_THAT(in.decoding, IsOk());
  absl::StatusOr<core::BackwardArgs> args =
      ToBackwardArgs(in.decoded, nullptr, &in.payloads);
  ASSERT_THAT(args, IsOk());
  for (const auto& [view, sent] :
       {std::pair{&args->query, &r.query()}, std::pair{&args->key, &r.key()},
        std::pair{&args->value, &r.value()}, std::pair{&args->dy, &r.dy()},
        std::pair{&*args->attention_in, &r.attention_in()}}) {
    EXPECT_EQ(view->data, nullptr);
    EXPECT_EQ(view->size_bytes, 32u);
    ASSERT_NE(view->chunks, nullptr);
    EXPECT_GT(view->chunks->chunks().size(), 1u);
    EXPECT_EQ(Joined(*view), sent->data());
  }
  EXPECT_EQ(args->softmax_max->chunks, nullptr);
  EXPECT_EQ(args->options.atten_mask->chunks, nullptr);
  EXPECT_EQ(static_cast<const char*>(args->options.atten_mask->data)[3],
            r.atten_mask().data()[3]);
  // Only softmax_max and atten_mask were copied.
  EXPECT_EQ(in.payloads.copied_bytes(), 64u + 4u);
}

// NSA's kernels read their tensors whole: every payload is joined.
TEST(ProtoConvertTest, NsaTensorsAreJoined) {
  v1::NsaSelectedAttentionRequest r;
  *r.mutable_query() = MakeTensor(v1::DATA_TYPE_FLOAT32, {2, 1, 4}, 32);
  *r.mutable_key() = MakeTensor(v1::DATA_TYPE_FLOAT32, {2, 1, 4}, 32);
  *r.mutable_value() = MakeTensor(v1::DATA_TYPE_FLOAT32, {2, 1, 4}, 32);
  *r.mutable_topk_indices() = MakeTensor(v1::DATA_TYPE_INT32, {2, 1, 1}, 8);
  ReceivedInChunks<v1::NsaSelectedAttentionRequest> in(r);
  ASSERT_THAT(in.decoding, IsOk());
  absl::StatusOr<core::NsaForwardArgs> args =
      ToNsaForwardArgs(in.decoded, nullptr, &in.payloads);
  ASSERT_THAT(args, IsOk());
  for (const core::TensorView* view :
       {&args->query, &args->key, &args->value, &args->topk_indices}) {
    EXPECT_EQ(view->chunks, nullptr);
    EXPECT_NE(view->data, nullptr);
  }
  EXPECT_EQ(in.payloads.copied_bytes(), 3u * 32u + 8u);
}

TEST(ProtoConvertTest, OutputSpecBecomesTensorSpec) {
  core::OutputSpec spec;
  spec.name = "softmax_max";
  spec.dtype = core::DType::kFloat32;
  spec.shape = {2, 8, 128, 8};
  v1::TensorSpec out;
  ToProto(spec, &out);
  EXPECT_EQ(out.name(), "softmax_max");
  EXPECT_EQ(out.dtype(), v1::DATA_TYPE_FLOAT32);
  EXPECT_THAT(out.shape(), ElementsAre(2, 8, 128, 8));
}

}  // namespace
}  // namespace attnserve::server
