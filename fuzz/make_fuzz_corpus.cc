// Writes the fuzz targets' seed corpora: make_fuzz_corpus DIR writes
// DIR/<target>/<name> for each target (request, token, request_id, log,
// dtype). The compute requests are the test harness's cases
// (tests/testing: FeatureCase, NsaCase), made small enough to run in the
// request fuzzer, for every operator, layout, dtype and option family, as
// the request fuzzer reads them (selector byte, chunking byte, message),
// and PutTensor streams.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnserve/core/plan.h"
#include "attnserve/v1/attention.pb.h"
#include "tests/testing/feature_case.h"
#include "tests/testing/nsa_case.h"
#include "tests/testing/nsa_requests.h"

namespace attnserve::fuzz {
namespace {

using core::DType;
using core::Layout;
using test::FeatureCase;
using test::FeatureConfig;
using test::ToWire;

std::string g_dir;
int g_count = 0;

void Write(const std::string& target, const std::string& name,
           const std::string& bytes) {
  const std::string path = absl::StrCat(g_dir, "/", target, "/", name);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "make_fuzz_corpus: cannot write %s\n", path.c_str());
    std::exit(1);
  }
  ++g_count;
}

// The request fuzzer's input: selector, chunking, message.
void WriteRequest(const std::string& name, int selector,
                  const google::protobuf::Message& message, int chunk = 0) {
  std::string bytes;
  bytes.push_back(static_cast<char>(selector));
  bytes.push_back(static_cast<char>(chunk));
  bytes += message.SerializeAsString();
  Write("request", name, bytes);
}

template <typename Request>
void SetOptions(const core::AttentionOptions& o, Request* r) {
  if (o.pse) *r->mutable_pse() = ToWire(*o.pse);
  if (o.drop_mask) *r->mutable_drop_mask() = ToWire(*o.drop_mask);
  if (o.atten_mask) *r->mutable_atten_mask() = ToWire(*o.atten_mask);
  r->mutable_prefix()->Assign(o.prefix.begin(), o.prefix.end());
  r->mutable_actual_seq_qlen()->Assign(o.actual_seq_qlen.begin(),
                                       o.actual_seq_qlen.end());
  r->mutable_actual_seq_kvlen()->Assign(o.actual_seq_kvlen.begin(),
                                        o.actual_seq_kvlen.end());
  r->mutable_q_start_idx()->Assign(o.q_start_idx.begin(), o.q_start_idx.end());
  r->mutable_kv_start_idx()->Assign(o.kv_start_idx.begin(),
                                    o.kv_start_idx.end());
  r->set_scale_value(o.scale_value);
  r->set_keep_prob(o.keep_prob);
  r->set_pre_tokens(o.pre_tokens);
  r->set_next_tokens(o.next_tokens);
  r->set_head_num(o.head_num);
  r->set_input_layout(o.input_layout);
  r->set_sparse_mode(o.sparse_mode);
  r->set_pse_type(o.pse_type);
  if (o.seed) r->set_seed(*o.seed);
  if (o.offset) r->set_offset(*o.offset);
}

v1::FlashAttentionScoreRequest ForwardRequest(const FeatureCase& c) {
  const core::ForwardArgs a = c.forward_args();
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = ToWire(a.query);
  *r.mutable_key() = ToWire(a.key);
  *r.mutable_value() = ToWire(a.value);
  SetOptions(a.options, &r);
  return r;
}

v1::FlashAttentionScoreGradRequest GradRequest(const FeatureCase& c,
                                               test::Residuals residuals) {
  const core::BackwardArgs a = c.backward_args_for(residuals, nullptr);
  v1::FlashAttentionScoreGradRequest r;
  *r.mutable_query() = ToWire(a.query);
  *r.mutable_key() = ToWire(a.key);
  *r.mutable_value() = ToWire(a.value);
  *r.mutable_dy() = ToWire(a.dy);
  if (a.softmax_max) *r.mutable_softmax_max() = ToWire(*a.softmax_max);
  if (a.softmax_sum) *r.mutable_softmax_sum() = ToWire(*a.softmax_sum);
  if (a.attention_in) *r.mutable_attention_in() = ToWire(*a.attention_in);
  SetOptions(a.options, &r);
  return r;
}

// Small cases of every FlashAttention feature family.
std::vector<std::pair<std::string, FeatureConfig>> FeatureConfigs() {
  std::vector<std::pair<std::string, FeatureConfig>> configs;
  FeatureConfig base;
  base.b = 2;
  base.n1 = 2;
  base.n2 = 1;
  base.s1 = 5;
  base.s2 = 7;
  base.d = 8;
  base.dv = 8;
  base.qk_range = 1.0;
  auto add = [&](const std::string& name, FeatureConfig c) {
    c.seed = configs.size() + 1;
    configs.emplace_back(name, c);
  };
  for (Layout layout :
       {Layout::kBSH, Layout::kSBH, Layout::kBSND, Layout::kBNSD}) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      FeatureConfig c = base;
      c.layout = layout;
      c.dtype = dtype;
      add(absl::StrCat("plain_", static_cast<int>(layout), "_",
                       core::DTypeName(dtype)),
          c);
    }
  }
  FeatureConfig c = base;
  c.n1 = 4;
  c.n2 = 4;
  c.dv = 4;
  add("mha_dv", c);
  c = base;
  c.mask = test::MaskForm::kPerHead;
  c.pre_tokens = 2;
  c.next_tokens = 1;
  add("mask_band", c);
  c = base;
  c.mask = test::MaskForm::kFull2D;
  c.mask_dtype = DType::kBool;
  c.sparse_mode = 1;
  add("mode1", c);
  for (int mode : {2, 3, 4}) {
    c = base;
    c.sparse_mode = mode;
    if (mode == 4) c.pre_tokens = c.next_tokens = 2;
    add(absl::StrCat("mode", mode), c);
  }
  c = base;
  c.sparse_mode = 5;
  c.mask = test::MaskForm::kPerBatch;
  c.prefix = {2, 4};
  add("mode5_prefix", c);
  c = base;
  c.pse = test::PseForm::kFull;
  add("pse_full", c);
  c = base;
  c.pse = test::PseForm::kRow;
  c.layout = Layout::kBSH;
  add("pse_row", c);
  for (int type : {2, 3}) {
    c = base;
    c.pse = test::PseForm::kSlopes;
    c.pse_type = type;
    c.q_start_idx = {1};
    c.kv_start_idx = {0};
    add(absl::StrCat("pse_slopes", type), c);
  }
  c = base;
  c.dropout = test::DropoutKind::kSeed;
  c.keep_prob = 0.75;
  c.dropout_seed = 7;
  c.dropout_offset = 3;
  add("dropout_seed", c);
  c = base;
  c.dropout = test::DropoutKind::kMask;
  c.drop_mask_shape = test::DropMaskShape::kPadded4D;
  add("dropout_mask", c);
  for (int mode : {0, 3, 4, 7, 8}) {
    c = base;
    c.layout = Layout::kTND;
    c.seq_q = {3, 0, 5};
    c.seq_kv = {4, 2, 6};
    c.sparse_mode = mode;
    if (mode == 4) c.pre_tokens = c.next_tokens = 1;
    if (mode == 0) c.mask = test::MaskForm::kTndPacked;
    add(absl::StrCat("tnd_mode", mode), c);
  }
  return configs;
}

void WriteRequests() {
  int i = 0;
  for (const auto& [name, config] : FeatureConfigs()) {
    const FeatureCase c(config);
    // Every third one arrives in slices of 7 bytes.
    const int chunk = i++ % 3 == 2 ? 7 : 0;
    WriteRequest("fa_" + name, 0, ForwardRequest(c), chunk);
    WriteRequest("grad_" + name, 1 | 0x10,
                 GradRequest(c, test::Residuals::kRecomputed), chunk);
    if (i % 4 == 0) {
      WriteRequest("grad_residuals_" + name, 1,
                   GradRequest(c, test::Residuals::kReference));
    }
    if (i % 5 == 0) {
      v1::GetWorkspaceSizeRequest size;
      *size.mutable_flash_attention_score() = ForwardRequest(c);
      WriteRequest("size_fa_" + name, 4, size);
      *size.mutable_flash_attention_score_grad() =
          GradRequest(c, test::Residuals::kRecomputed);
      WriteRequest("size_grad_" + name, 4, size);
    }
  }
  for (DType dtype : {DType::kFloat8E4M3FN, DType::kFloat8E5M2}) {
    FeatureConfig c = FeatureConfigs().front().second;
    c.dtype = dtype;
    WriteRequest(absl::StrCat("grad_", core::DTypeName(dtype)), 1,
                 GradRequest(FeatureCase(c), test::Residuals::kRecomputed));
  }

  // Tensors sent by handle (the fuzzer's store holds h0 = FLOAT32
  // [1,2,8,16], h1 = FLOAT16 [1,2,8,16]); retention.
  v1::FlashAttentionScoreRequest by_handle;
  for (v1::Tensor* t : {by_handle.mutable_query(), by_handle.mutable_key(),
                        by_handle.mutable_value()}) {
    t->set_handle("h0");
  }
  by_handle.set_head_num(2);
  by_handle.set_input_layout("BNSD");
  WriteRequest("fa_handles", 0, by_handle);
  by_handle.mutable_key()->set_handle("h1");
  by_handle.mutable_key()->set_dtype(v1::DATA_TYPE_FLOAT16);
  WriteRequest("fa_handles_mixed", 0, by_handle);
  by_handle.mutable_key()->set_handle("h0");
  by_handle.mutable_key()->clear_dtype();
  by_handle.mutable_retention()->set_keep(true);
  by_handle.mutable_retention()->set_outputs_by_handle(true);
  WriteRequest("fa_handles_kept", 0, by_handle);

  // NSA: D = Dv = 128, small batches, one block of 16 keys selected: the
  // grad's seed stays below 64 KiB. Every batch has keys (the server
  // refuses a batch with fewer than one block of them).
  test::NsaCaseConfig nsa;
  nsa.seq_q = {3, 4};
  nsa.seq_kv = {16, 16};
  nsa.n1 = 2;
  nsa.n2 = 1;
  nsa.block_size = 16;
  nsa.block_count = 1;
  nsa.qk_range = 1.0;
  for (int mode : {0, 2}) {
    for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
      nsa.sparse_mode = mode;
      nsa.dtype = dtype;
      const test::NsaCase c(nsa);
      const std::string name =
          absl::StrCat("mode", mode, "_", core::DTypeName(dtype));
      const v1::NsaSelectedAttentionRequest forward =
          test::NsaForwardRequest(c);
      WriteRequest("nsa_" + name, 2, forward);
      const core::NsaBackwardArgs a =
          c.backward_args_with_reference_residuals();
      v1::NsaSelectedAttentionGradRequest grad;
      *grad.mutable_query() = ToWire(a.query);
      *grad.mutable_key() = ToWire(a.key);
      *grad.mutable_value() = ToWire(a.value);
      *grad.mutable_attention_out() = ToWire(a.attention_out);
      *grad.mutable_attention_out_grad() = ToWire(a.attention_out_grad);
      *grad.mutable_softmax_max() = ToWire(a.softmax_max);
      *grad.mutable_softmax_sum() = ToWire(a.softmax_sum);
      *grad.mutable_topk_indices() = ToWire(a.topk_indices);
      const core::NsaOptions& o = a.options;
      grad.mutable_actual_seq_qlen()->Assign(o.actual_seq_qlen.begin(),
                                             o.actual_seq_qlen.end());
      grad.mutable_actual_seq_kvlen()->Assign(o.actual_seq_kvlen.begin(),
                                              o.actual_seq_kvlen.end());
      grad.set_scale_value(o.scale_value);
      grad.set_selected_block_size(o.selected_block_size);
      grad.set_selected_block_count(o.selected_block_count);
      grad.set_head_num(o.head_num);
      grad.set_input_layout(o.input_layout);
      grad.set_sparse_mode(o.sparse_mode);
      WriteRequest("nsa_grad_" + name, 3, grad, mode == 2 ? 5 : 0);
      v1::GetWorkspaceSizeRequest size;
      *size.mutable_nsa_selected_attention() = forward;
      WriteRequest("size_nsa_" + name, 4, size);
      *size.mutable_nsa_selected_attention_grad() = grad;
      WriteRequest("size_nsa_grad_" + name, 4, size);
    }
  }
}

void WriteSmallCorpora() {
  const std::string token_a = "3c1f0d6e9b0a4e6f8e2f";
  const std::string token_b = "7d2b55a0c41e7d2b55a0";
  Write("token", "one", token_a + "\n");
  Write("token", "file",
        "# ops team: everything\n" + token_a +
            "\n\n# monitoring: read-only calls\n" + token_b +
            "  GetServerInfo,GetWorkspaceSize\n" + std::string(1, '\0') +
            "Bearer " + token_b);
  Write("token", "crlf", token_a + "\r\n\t" + token_b + "\tGetServerInfo\r\n");
  Write("token", "short", "tooshort\n");
  Write("token", "three_words", token_a + " A B\n");

  Write("request_id", "hex", "3f2a9c0011223344556677889900aabb");
  Write("request_id", "chars", "req-1:2.3_x");
  Write("request_id", "generate", "g");
  Write("request_id", "space", "bad id");
  Write("request_id", "long", std::string(129, 'a'));

  Write("log", "ascii", "BSND status=OK\n\"quoted\"\\ and a long tail");
  Write("log", "utf8", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 \xED\xA0\x80");
  Write("log", "hex_after_space",
        " a\x01"
        "f");

  std::string floats;
  for (float f : {1.0f / 3.0f, 65504.0f, 65520.0f, 448.0f, 464.0f, 57344.0f,
                  61440.0f, 1e-8f, 6e-5f, -0.0f, 3.0e38f, INFINITY, NAN, -NAN,
                  1.0f + 0x1p-8f, 1.0f + 0x1p-11f}) {
    char bytes[4];
    std::memcpy(bytes, &f, 4);
    floats.append(bytes, 4);
  }
  Write("dtype", "edges", floats);
}

// The request fuzzer's PutTensor streams: selector 0x20, chunking, then each
// message after its length in two bytes (little-endian).
void WriteUpload(const std::string& name,
                 const std::vector<v1::PutTensorRequest>& messages,
                 int chunk = 0) {
  std::string bytes;
  bytes.push_back(static_cast<char>(0x20));
  bytes.push_back(static_cast<char>(chunk));
  for (const v1::PutTensorRequest& message : messages) {
    const std::string encoded = message.SerializeAsString();
    bytes.push_back(static_cast<char>(encoded.size() & 0xff));
    bytes.push_back(static_cast<char>(encoded.size() >> 8));
    bytes += encoded;
  }
  Write("request", name, bytes);
}

// Uploads of a FLOAT16 [3, 5] tensor (30 bytes): whole, in chunks, with a
// time to live, too short, too long, and a second header.
void WriteUploads() {
  std::string data(30, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 37);
  v1::PutTensorRequest first;
  first.mutable_tensor()->set_dtype(v1::DATA_TYPE_FLOAT16);
  first.mutable_tensor()->add_shape(3);
  first.mutable_tensor()->add_shape(5);
  auto chunk = [](const std::string& bytes) {
    v1::PutTensorRequest m;
    m.set_chunk(bytes);
    return m;
  };
  v1::PutTensorRequest whole = first;
  whole.set_chunk(data);
  WriteUpload("upload_whole", {whole});
  WriteUpload("upload_chunks",
              {first, chunk(data.substr(0, 7)), chunk(data.substr(7, 20)),
               chunk(data.substr(27))},
              5);
  v1::PutTensorRequest with_ttl = first;
  with_ttl.set_ttl_seconds(60);
  with_ttl.set_chunk(data.substr(0, 10));
  WriteUpload("upload_ttl", {with_ttl, chunk(data.substr(10))});
  WriteUpload("upload_short", {first, chunk(data.substr(0, 29))});
  WriteUpload("upload_long", {whole, chunk("x")});
  WriteUpload("upload_two_headers", {first, first});
}

}  // namespace
}  // namespace attnserve::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_corpus DIR\n");
    return 2;
  }
  attnserve::fuzz::g_dir = argv[1];
  for (const char* target :
       {"request", "token", "request_id", "log", "dtype"}) {
    std::error_code error;
    std::filesystem::create_directories(attnserve::fuzz::g_dir + "/" + target,
                                        error);
    if (error) {
      std::fprintf(stderr, "make_fuzz_corpus: %s\n", error.message().c_str());
      return 1;
    }
  }
  attnserve::fuzz::WriteRequests();
  attnserve::fuzz::WriteUploads();
  attnserve::fuzz::WriteSmallCorpora();
  std::printf("make_fuzz_corpus: %d seeds in %s\n", attnserve::fuzz::g_count,
              argv[1]);
  return 0;
}
