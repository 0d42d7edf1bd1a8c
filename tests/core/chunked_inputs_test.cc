// Inputs the kernels read where they were received: query, key, value, dy
// and attention_in given as chunked bytes (TensorView::chunks) give the
// same bits as the same tensors given contiguously, on every product path
// the host has, and match the float64 reference; tensors that must be
// contiguous are refused in chunks.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "attnserve/core/chunked_bytes.h"
#include "attnserve/core/engine.h"
#include "attnserve/core/plan.h"
#include "attnserve/core/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/attention_case.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::test {
namespace {

using core::DType;
using core::Layout;
using ::testing::HasSubstr;

// A copy of a tensor's bytes in chunks whose sizes cycle through
// `pattern`, each stored one byte past an aligned address: elements and
// rows straddle chunks, and no row starts aligned.
class ChunkedCopy {
 public:
  ChunkedCopy(const core::TensorView& view, std::vector<size_t> pattern) {
    const auto* data = static_cast<const char*>(view.data);
    size_t at = 0;
    for (size_t i = 0; at < view.size_bytes; ++i) {
      const size_t n =
          std::min(pattern[i % pattern.size()], view.size_bytes - at);
      // A block's bytes stay where they are when the vector moves it.
      std::vector<char> block(n + 1);
      std::copy(data + at, data + at + n, block.begin() + 1);
      pieces_.emplace_back(block.data() + 1, n);
      blocks_.push_back(std::move(block));
      at += n;
    }
    bytes_ = core::ChunkedBytes(pieces_);
    view_ = view;
    view_.data = nullptr;
    view_.chunks = &bytes_;
  }
  ChunkedCopy(const ChunkedCopy&) = delete;
  ChunkedCopy& operator=(const ChunkedCopy&) = delete;

  const core::TensorView& view() const { return view_; }
  size_t chunk_count() const { return bytes_.chunks().size(); }

 private:
  std::vector<std::vector<char>> blocks_;
  std::vector<absl::string_view> pieces_;
  core::ChunkedBytes bytes_;
  core::TensorView view_;
};

// Sizes that split elements (1, 3), rows (250) and runs of rows.
const std::vector<size_t> kPattern = {1, 3, 250, 4093, 7, 16384, 2};

struct PathCase {
  Layout layout;
  DType dtype;
  bool allow_bf16;  // The bf16 tile products, where the host has them.
};

std::string PathName(const ::testing::TestParamInfo<PathCase>& info) {
  return std::string(core::LayoutName(info.param.layout)) + "_" +
         std::string(core::DTypeName(info.param.dtype)) +
         (info.param.allow_bf16 ? "_Bf16Products" : "_Fp32Products");
}

class ChunkedInputsTest : public ::testing::TestWithParam<PathCase> {
 protected:
  CaseConfig Config() const {
    CaseConfig c;
    c.layout = GetParam().layout;
    c.dtype = GetParam().dtype;
    c.dims = RefDims{2, 4, 2, 67, 131, 64, 64};
    c.mask = MaskKind::kPerBatch;
    c.seed = 71;
    return c;
  }

  template <typename Call, typename Args>
  absl::StatusOr<typename Call::Result> Run(const Args& args) {
    ATTN_ASSIGN_OR_RETURN(Call call, Call::Prepare(args, core::ThreadPolicy(2),
                                                   GetParam().allow_bf16));
    core::CancelToken token;
    return engine_.Run(call, token);
  }

  core::Engine engine_{[] {
    core::EngineOptions options;
    options.intra_op_threads = 2;
    return options;
  }()};
};

void ExpectSameBits(const core::HostTensor& chunked,
                    const core::HostTensor& contiguous,
                    const std::string& name) {
  EXPECT_EQ(chunked.shape, contiguous.shape) << name;
  EXPECT_TRUE(chunked.bytes == contiguous.bytes)
      << name << " differs from the contiguous run";
}

TEST_P(ChunkedInputsTest, ForwardGivesTheContiguousRunsBits) {
  AttentionCase c(Config());
  const core::ForwardArgs contiguous = c.forward_args();
  ChunkedCopy q(contiguous.query, kPattern), k(contiguous.key, kPattern),
      v(contiguous.value, kPattern);
  ASSERT_GT(k.chunk_count(), 10u);
  core::ForwardArgs chunked = contiguous;
  chunked.query = q.view();
  chunked.key = k.view();
  chunked.value = v.view();

  absl::StatusOr<core::ForwardResult> want = Run<core::ForwardCall>(contiguous);
  absl::StatusOr<core::ForwardResult> got = Run<core::ForwardCall>(chunked);
  ASSERT_THAT(want, IsOk());
  ASSERT_THAT(got, IsOk());
  ExpectSameBits(got->attention_out, want->attention_out, "attention_out");
  ExpectSameBits(got->softmax_max, want->softmax_max, "softmax_max");
  ExpectSameBits(got->softmax_sum, want->softmax_sum, "softmax_sum");
  ExpectForwardMatches(c, *got, TolerancesFor(c.config().dtype));
}

TEST_P(ChunkedInputsTest, BackwardGivesTheContiguousRunsBits) {
  AttentionCase c(Config());
  absl::StatusOr<core::ForwardResult> fwd =
      Run<core::ForwardCall>(c.forward_args());
  ASSERT_THAT(fwd, IsOk());
  // With the forward's residuals (attention_in chunked too), and without
  // them (the forward recomputed from chunked inputs).
  for (const bool residuals : {true, false}) {
    SCOPED_TRACE(residuals ? "residuals sent" : "residuals recomputed");
    const core::BackwardArgs contiguous =
        c.backward_args(residuals ? &*fwd : nullptr);
    ChunkedCopy q(contiguous.query, kPattern), k(contiguous.key, kPattern),
        v(contiguous.value, kPattern), dy(contiguous.dy, kPattern);
    core::BackwardArgs chunked = contiguous;
    chunked.query = q.view();
    chunked.key = k.view();
    chunked.value = v.view();
    chunked.dy = dy.view();
    std::unique_ptr<ChunkedCopy> out;
    if (residuals) {
      out = std::make_unique<ChunkedCopy>(*contiguous.attention_in, kPattern);
      chunked.attention_in = out->view();
    }
    absl::StatusOr<core::BackwardResult> want =
        Run<core::BackwardCall>(contiguous);
    absl::StatusOr<core::BackwardResult> got = Run<core::BackwardCall>(chunked);
    ASSERT_THAT(want, IsOk());
    ASSERT_THAT(got, IsOk());
    ExpectSameBits(got->dq, want->dq, "dq");
    ExpectSameBits(got->dk, want->dk, "dk");
    ExpectSameBits(got->dv, want->dv, "dv");
    ExpectBackwardMatches(c, *got, TolerancesFor(c.config().dtype));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, ChunkedInputsTest,
    ::testing::Values(PathCase{Layout::kBSH, DType::kFloat32, true},
                      PathCase{Layout::kBNSD, DType::kFloat32, true},
                      PathCase{Layout::kSBH, DType::kFloat16, true},
                      PathCase{Layout::kBSND, DType::kBFloat16, true},
                      PathCase{Layout::kBNSD, DType::kBFloat16, true},
                      PathCase{Layout::kBNSD, DType::kBFloat16, false}),
    PathName);

TEST(ChunkedInputsRefusalTest, TensorsThatMustBeContiguousAreRefusedInChunks) {
  CaseConfig config;
  config.mask = MaskKind::kPerHead;
  AttentionCase c(config);
  core::ForwardArgs args = c.forward_args();
  ChunkedCopy mask(*args.options.atten_mask, kPattern);
  args.options.atten_mask = mask.view();
  EXPECT_THAT(core::ForwardCall::Prepare(args).status(),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("atten_mask.data: this tensor must be "
                                 "contiguous")));

  absl::StatusOr<core::ForwardResult> fwd = RunForward(c.forward_args());
  ASSERT_THAT(fwd, IsOk());
  core::BackwardArgs grad = c.backward_args(&*fwd);
  ChunkedCopy max(*grad.softmax_max, kPattern);
  grad.softmax_max = max.view();
  EXPECT_THAT(core::BackwardCall::Prepare(grad).status(),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("softmax_max.data: this tensor must be "
                                 "contiguous")));
}

TEST(ChunkedInputsRefusalTest, ChunksOfAnotherSizeThanTheViewSaysAreRefused) {
  AttentionCase c{CaseConfig()};
  core::ForwardArgs args = c.forward_args();
  ChunkedCopy key(args.key, kPattern);
  args.key = key.view();
  args.key.size_bytes += 4;
  EXPECT_THAT(core::ForwardCall::Prepare(args).status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("key.data: ")));
}

TEST(ChunkedBytesTest, SubViewsARangeAcrossChunks) {
  const core::ChunkedBytes bytes({"ab", "", "cde", "f", "ghij"});
  ASSERT_EQ(bytes.size(), 10u);
  ASSERT_EQ(bytes.chunks().size(), 4u);  // The empty chunk is skipped.
  const core::ChunkedBytes sub = bytes.Sub({1, 7});
  EXPECT_EQ(sub.size(), 7u);
  ASSERT_EQ(sub.chunks().size(), 4u);
  EXPECT_EQ(sub.chunks()[0], "b");
  EXPECT_EQ(sub.chunks()[3], "gh");
  std::string all(7, '\0');
  sub.CopyTo({0, 7}, all.data());
  EXPECT_EQ(all, "bcdefgh");
  EXPECT_EQ(sub.ChunkOf(3), 1u);
  EXPECT_EQ(sub.ChunkStart(2), 4u);
  EXPECT_EQ(sub.Contiguous({1, 3}), "cde");
  EXPECT_EQ(sub.Contiguous({3, 2}), "");  // Spans two chunks.
  EXPECT_EQ(bytes.Sub({4, 0}).size(), 0u);
}

}  // namespace
}  // namespace attnserve::test
