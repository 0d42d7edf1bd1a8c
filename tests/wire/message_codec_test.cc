// The message codec: DecodeMessage against protobuf's own parser (same
// message, payloads left in place, any chunking), EncodeMessage against
// protobuf's serializer (same bytes, payloads sent from their buffers), and
// hostile bytes: truncations, garbage, mutations and oversized shapes never
// crash the decoder and are refused with the field named.
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attnserve/core/buffer.h"
#include "attnserve/core/buffer_pool.h"
#include "attnserve/core/status_macros.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/message_decoder.h"
#include "attnserve/wire/message_encoder.h"
#include "attnserve/wire/received_bytes.h"
#include "attnserve/wire/request_payloads.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::wire {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr int kData = v1::Tensor::kDataFieldNumber;

std::string Bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen());
  return s;
}

v1::Tensor MakeTensor(v1::DataType dtype, std::vector<int64_t> shape,
                      size_t data_bytes, uint32_t seed) {
  v1::Tensor t;
  t.set_dtype(dtype);
  t.mutable_shape()->Assign(shape.begin(), shape.end());
  t.set_data(Bytes(data_bytes, seed));
  return t;
}

// A request with every kind of field: tensors (one by handle), optional and
// repeated scalars, strings, a nested message.
v1::FlashAttentionScoreRequest FullRequest(size_t q_bytes) {
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() =
      MakeTensor(v1::DATA_TYPE_BFLOAT16, {1, 2, 3, 4}, q_bytes, 1);
  *r.mutable_key() = MakeTensor(v1::DATA_TYPE_FLOAT32, {1, 2, 3, 4}, 96, 2);
  r.mutable_value()->set_handle("h-0123456789abcdef");
  *r.mutable_atten_mask() = MakeTensor(v1::DATA_TYPE_BOOL, {3, 3}, 9, 3);
  r.add_prefix(5);
  r.add_prefix(-7);
  r.add_actual_seq_qlen(3);
  r.set_scale_value(0.125);
  r.set_keep_prob(0.9);
  r.set_pre_tokens(-1);
  r.set_next_tokens(0);  // optional: present although 0
  r.set_head_num(2);
  r.set_input_layout("BNSD");
  r.set_sparse_mode(3);
  r.set_seed(0xffffffffffffffffULL);
  r.mutable_retention()->set_keep(true);
  r.mutable_retention()->set_ttl_seconds(30);
  return r;
}

// `bytes` in chunks of random sizes (1 .. max_chunk).
std::vector<std::string> Split(const std::string& bytes, size_t max_chunk,
                               uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::string> chunks;
  for (size_t at = 0; at < bytes.size();) {
    const size_t n = std::min<size_t>(bytes.size() - at, 1 + gen() % max_chunk);
    chunks.push_back(bytes.substr(at, n));
    at += n;
  }
  return chunks;
}

ReceivedBytes View(const std::vector<std::string>& chunks) {
  std::vector<absl::string_view> views(chunks.begin(), chunks.end());
  return ReceivedBytes(std::move(views));
}

// `message` with every Tensor's data moved into `out` (by field path).
void ClearTensorData(google::protobuf::Message* message) {
  if (message->GetDescriptor() == v1::Tensor::descriptor()) {
    static_cast<v1::Tensor*>(message)->clear_data();
    return;
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  message->GetReflection()->ListFields(*message, &fields);
  for (const auto* field : fields) {
    if (field->message_type() == nullptr || field->is_repeated()) continue;
    ClearTensorData(message->GetReflection()->MutableMessage(message, field));
  }
}

TEST(ReceivedBytesTest, CopiesAndViewsAcrossChunks) {
  const std::vector<std::string> chunks = {"ab", "", "cde", "f"};
  ReceivedBytes bytes = View(chunks);
  EXPECT_EQ(bytes.size(), 6u);
  std::string out(4, '\0');
  bytes.CopyTo(ByteRange{1, 4}, out.data());
  EXPECT_EQ(out, "bcde");
  EXPECT_EQ(bytes.Contiguous(ByteRange{2, 3}), "cde");
  EXPECT_TRUE(bytes.Contiguous(ByteRange{1, 2}).empty());  // Spans two.
}

TEST(MessageDecoderTest, EqualsProtobufsParseWithPayloadsLeftInPlace) {
  const v1::FlashAttentionScoreRequest original = FullRequest(4096);
  const std::string serialized = original.SerializeAsString();
  for (size_t max_chunk :
       {size_t{1}, size_t{7}, size_t{100}, serialized.size()}) {
    SCOPED_TRACE(max_chunk);
    const std::vector<std::string> chunks = Split(serialized, max_chunk, 5);
    v1::FlashAttentionScoreRequest decoded;
    ReceivedPayloads payloads;
    ASSERT_THAT(DecodeMessage(View(chunks), &decoded, &payloads), IsOk());

    v1::FlashAttentionScoreRequest expected = original;
    ClearTensorData(&expected);
    EXPECT_TRUE(MessageDifferencer::Equals(decoded, expected))
        << decoded.DebugString();
    // Payloads: query, key and the mask; value came by handle, with no data.
    EXPECT_EQ(payloads.size(), 3u);
    RequestPayloads source(View(chunks), std::move(payloads), nullptr);
    for (const auto& [tensor, want] :
         {std::pair{&decoded.query(), &original.query()},
          std::pair{&decoded.key(), &original.key()},
          std::pair{&decoded.atten_mask(), &original.atten_mask()}}) {
      ASSERT_EQ(source.SizeOf(*tensor, kData), want->data().size());
      const core::Buffer* got = source.Get(*tensor, kData);
      ASSERT_NE(got, nullptr);
      EXPECT_EQ(got->view(), want->data());
    }
    EXPECT_FALSE(source.SizeOf(decoded.value(), kData).has_value());
    EXPECT_EQ(decoded.value().handle(), "h-0123456789abcdef");
  }
}

TEST(MessageDecoderTest, DecodesNestedRequestsOfGetWorkspaceSize) {
  v1::GetWorkspaceSizeRequest original;
  *original.mutable_flash_attention_score_grad()->mutable_dy() =
      MakeTensor(v1::DATA_TYPE_FLOAT16, {2, 2}, 8, 9);
  original.mutable_flash_attention_score_grad()->set_head_num(4);
  v1::GetWorkspaceSizeRequest decoded;
  ReceivedPayloads payloads;
  const std::string bytes = original.SerializeAsString();
  ASSERT_THAT(DecodeMessage(ReceivedBytes({bytes}), &decoded, &payloads),
              IsOk());
  EXPECT_EQ(decoded.op_case(),
            v1::GetWorkspaceSizeRequest::kFlashAttentionScoreGrad);
  EXPECT_EQ(decoded.flash_attention_score_grad().head_num(), 4);
  const ByteRange* dy =
      payloads.Find(decoded.flash_attention_score_grad().dy(), kData);
  ASSERT_NE(dy, nullptr);
  EXPECT_EQ(bytes.substr(dy->offset, dy->size),
            original.flash_attention_score_grad().dy().data());
}

TEST(MessageDecoderTest, MergesRepeatedOccurrencesLikeProtobuf) {
  // Two occurrences of `query` merge (shape appends, the last data wins),
  // and the last of two oneof members wins.
  v1::FlashAttentionScoreRequest a, b;
  *a.mutable_query() = MakeTensor(v1::DATA_TYPE_FLOAT32, {2}, 8, 1);
  *b.mutable_query() = MakeTensor(v1::DATA_TYPE_FLOAT16, {3}, 6, 2);
  const std::string bytes = a.SerializeAsString() + b.SerializeAsString();
  v1::FlashAttentionScoreRequest decoded;
  ReceivedPayloads payloads;
  ASSERT_THAT(DecodeMessage(ReceivedBytes({bytes}), &decoded, &payloads),
              IsOk());
  EXPECT_EQ(decoded.query().dtype(), v1::DATA_TYPE_FLOAT16);
  EXPECT_THAT(decoded.query().shape(), ::testing::ElementsAre(2, 3));
  EXPECT_EQ(payloads.Find(decoded.query(), kData)->size, 6u);

  v1::GetWorkspaceSizeRequest first, second;
  first.mutable_flash_attention_score()->set_head_num(1);
  second.mutable_nsa_selected_attention()->set_head_num(2);
  const std::string both =
      first.SerializeAsString() + second.SerializeAsString();
  v1::GetWorkspaceSizeRequest op;
  ASSERT_THAT(DecodeMessage(ReceivedBytes({both}), &op, &payloads), IsOk());
  EXPECT_EQ(op.op_case(), v1::GetWorkspaceSizeRequest::kNsaSelectedAttention);
}

TEST(MessageDecoderTest, RefusesMoreDimensionsThanTheRankLimit) {
  v1::FlashAttentionScoreRequest r;
  for (int i = 0; i < 40; ++i) r.mutable_key()->add_shape(1);
  v1::FlashAttentionScoreRequest decoded;
  ReceivedPayloads payloads;
  EXPECT_THAT(DecodeMessage(ReceivedBytes({r.SerializeAsString()}), &decoded,
                            &payloads),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("key.shape: more than 32 dimensions")));
  EXPECT_EQ(core::FieldOf(DecodeMessage(ReceivedBytes({r.SerializeAsString()}),
                                        &decoded, &payloads)),
            "key.shape");
}

TEST(MessageDecoderTest, RefusesLongRepeatedFieldsAndStrings) {
  DecodeLimits limits;
  limits.max_repeated = 10;
  limits.max_string_bytes = 8;
  v1::FlashAttentionScoreRequest r;
  for (int i = 0; i < 11; ++i) r.add_actual_seq_qlen(i);
  v1::FlashAttentionScoreRequest decoded;
  ReceivedPayloads payloads;
  EXPECT_THAT(DecodeMessage(ReceivedBytes({r.SerializeAsString()}), &decoded,
                            &payloads, limits),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("actual_seq_qlen: more than 10 elements")));
  v1::FlashAttentionScoreRequest s;
  s.set_input_layout("BNSDBNSDB");
  EXPECT_THAT(DecodeMessage(ReceivedBytes({s.SerializeAsString()}), &decoded,
                            &payloads, limits),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input_layout: longer than 8 bytes")));
}

TEST(MessageDecoderTest, NamesTheFieldWhoseLengthRunsPastTheEnd) {
  // query (field 1, length 100) with only 3 bytes after it.
  const std::string bytes = std::string("\x0a\x64", 2) + "abc";
  v1::FlashAttentionScoreRequest decoded;
  ReceivedPayloads payloads;
  absl::Status status =
      DecodeMessage(ReceivedBytes({bytes}), &decoded, &payloads);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("length 100 runs past the end")));
  EXPECT_EQ(core::FieldOf(status), "query");
}

TEST(MessageDecoderTest, DropsUnknownFieldsAndMismatchedWireTypes) {
  v1::FlashAttentionScoreRequest r;
  r.set_head_num(8);
  std::string bytes = r.SerializeAsString();
  bytes += std::string("\xa8\x1f\x05", 3);   // Field 501, varint: unknown.
  bytes += std::string("\x8a\x01\x01x", 4);  // head_num (17) as LEN.
  v1::FlashAttentionScoreRequest decoded;
  ReceivedPayloads payloads;
  ASSERT_THAT(DecodeMessage(ReceivedBytes({bytes}), &decoded, &payloads),
              IsOk());
  EXPECT_EQ(decoded.head_num(), 8);
  v1::FlashAttentionScoreRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  parsed.DiscardUnknownFields();
  EXPECT_TRUE(MessageDifferencer::Equals(decoded, parsed));
}

// Every prefix of a valid request, and random garbage: no crash, and when
// the decoder accepts, protobuf accepts the same message.
TEST(MessageDecoderFuzzTest, TruncationsAndGarbageNeverCrash) {
  const std::string valid = FullRequest(300).SerializeAsString();
  for (size_t n = 0; n <= valid.size(); ++n) {
    const std::string prefix = valid.substr(0, n);
    v1::FlashAttentionScoreRequest decoded;
    ReceivedPayloads payloads;
    const absl::Status status = DecodeMessage(
        View(Split(prefix, 13, static_cast<uint32_t>(n))), &decoded, &payloads);
    v1::FlashAttentionScoreRequest parsed;
    const bool protobuf_ok = parsed.ParseFromString(prefix);
    if (status.ok()) {
      EXPECT_TRUE(protobuf_ok) << "prefix of " << n << " bytes";
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    }
  }
  std::mt19937 gen(11);
  for (int round = 0; round < 2000; ++round) {
    const std::string garbage = Bytes(1 + gen() % 200, gen());
    v1::GetWorkspaceSizeRequest decoded;
    ReceivedPayloads payloads;
    const absl::Status status =
        DecodeMessage(View(Split(garbage, 9, round)), &decoded, &payloads);
    if (!status.ok()) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

// Valid requests with a few bytes changed: the decoder agrees with protobuf
// whenever both accept, and accepts whatever protobuf accepts except for
// its limits and groups.
TEST(MessageDecoderFuzzTest, MutationsAgreeWithProtobuf) {
  const std::string valid = FullRequest(64).SerializeAsString();
  std::mt19937 gen(23);
  int both_ok = 0;
  for (int round = 0; round < 5000; ++round) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(gen() % 3);
    for (int e = 0; e < edits; ++e) {
      bytes[gen() % bytes.size()] = static_cast<char>(gen());
    }
    v1::FlashAttentionScoreRequest decoded;
    ReceivedPayloads payloads;
    const absl::Status status =
        DecodeMessage(View(Split(bytes, 50, round)), &decoded, &payloads);
    v1::FlashAttentionScoreRequest parsed;
    const bool protobuf_ok = parsed.ParseFromString(bytes);
    if (status.ok()) {
      ASSERT_TRUE(protobuf_ok) << "round " << round;
      parsed.DiscardUnknownFields();
      ClearTensorData(&parsed);
      EXPECT_TRUE(MessageDifferencer::Equals(decoded, parsed))
          << "round " << round;
      ++both_ok;
    } else if (protobuf_ok) {
      EXPECT_THAT(status.message(), ::testing::AnyOf(HasSubstr("more than"),
                                                     HasSubstr("longer than"),
                                                     HasSubstr("groups")))
          << "round " << round;
    }
  }
  EXPECT_GT(both_ok, 100);  // The mutations do not all break the message.
}

// Responses as the server builds them: tensors without data in the
// message, their bytes in buffers.
TEST(MessageEncoderTest, PiecesConcatenateToProtobufsSerialization) {
  v1::FlashAttentionScoreResponse response;
  response.mutable_attention_out()->set_dtype(v1::DATA_TYPE_BFLOAT16);
  response.mutable_attention_out()->add_shape(1 << 17);
  response.mutable_softmax_max()->set_dtype(v1::DATA_TYPE_FLOAT32);
  response.mutable_softmax_max()->add_shape(8);
  response.mutable_stats()->set_compute_seconds(0.25);
  response.mutable_stats()->set_flops(1e12);
  (*response.mutable_handles())["query"] = "h1";
  const core::Buffer out(Bytes(1 << 18, 4).data(), 1 << 18);  // 256 KiB
  const core::Buffer max(Bytes(32, 5).data(), 32);

  OutgoingPayloads payloads;
  payloads.Set(&response.attention_out(), kData, out.Share());
  payloads.Set(&response.softmax_max(), kData, max.Share());
  EncodedMessage encoded = EncodeMessage(response, payloads);

  v1::FlashAttentionScoreResponse expected = response;
  expected.mutable_attention_out()->set_data(std::string(out.view()));
  expected.mutable_softmax_max()->set_data(std::string(max.view()));
  std::string want;
  ASSERT_TRUE(expected.SerializeToString(&want));
  EXPECT_EQ(encoded.size(), want.size());
  EXPECT_TRUE(encoded.Flatten() == want);

  // The big payload is a piece of its own, pointing into its buffer.
  int shared = 0;
  for (const EncodedMessage::Piece& piece : encoded.pieces()) {
    if (piece.owner != nullptr) {
      ++shared;
      EXPECT_EQ(piece.bytes.data(), out.data());
      EXPECT_EQ(piece.owner->data(), out.data());
    }
  }
  EXPECT_EQ(shared, 1);
  EXPECT_EQ(out.use_count(), 2);  // `out` and the payload table.
}

TEST(MessageEncoderTest, BorrowsLargeBytesOfTheMessageItself) {
  const v1::FlashAttentionScoreRequest request = FullRequest(1 << 17);
  EncodedMessage encoded = EncodeMessage(request, OutgoingPayloads());
  EXPECT_TRUE(encoded.Flatten() == request.SerializeAsString());
  bool borrowed = false;
  for (const EncodedMessage::Piece& piece : encoded.pieces()) {
    if (piece.bytes.data() == request.query().data().data()) borrowed = true;
  }
  EXPECT_TRUE(borrowed);
}

TEST(MessageEncoderTest, EncodesEveryScalarKindLikeProtobuf) {
  v1::FlashAttentionScoreGradRequest r;
  r.set_scale_value(-0.0);
  r.set_keep_prob(1.0);
  r.set_pre_tokens(-5);
  r.set_head_num(std::numeric_limits<int64_t>::min());
  r.set_inner_precise(1);
  r.set_seed(0);
  r.set_offset(std::numeric_limits<uint64_t>::max());
  r.add_prefix(-1);
  r.add_prefix(300);
  r.mutable_query()->set_dtype(static_cast<v1::DataType>(-3));  // Open enum.
  r.mutable_query()->add_shape(-2);
  r.mutable_retention();  // Present and empty.
  EXPECT_TRUE(EncodeMessage(r, OutgoingPayloads()).Flatten() ==
              r.SerializeAsString());
}

}  // namespace
}  // namespace attnserve::wire
