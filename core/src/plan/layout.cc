#include "plan/layout.h"

#include "attnserve/core/status_macros.h"

namespace attnserve::core {

absl::StatusOr<Layout> ParseLayout(const std::string& name) {
  if (name == "BSH") return Layout::kBSH;
  if (name == "SBH") return Layout::kSBH;
  if (name == "BSND") return Layout::kBSND;
  if (name == "BNSD") return Layout::kBNSD;
  if (name == "TND") return Layout::kTND;
  if (name.empty()) {
    return InvalidField("input_layout",
                        "is required: one of BSH, SBH, BSND, BNSD, TND");
  }
  return InvalidField("input_layout",
                      "must be one of BSH, SBH, BSND, BNSD, "
                      "TND, got \"" +
                          name + "\"");
}

const char* LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kBSH:
      return "BSH";
    case Layout::kSBH:
      return "SBH";
    case Layout::kBSND:
      return "BSND";
    case Layout::kBNSD:
      return "BNSD";
    case Layout::kTND:
      return "TND";
  }
  return "?";
}

std::vector<int64_t> ShapeFor(Layout layout, int64_t batch, int64_t seq,
                              int64_t heads, int64_t dim) {
  switch (layout) {
    case Layout::kBSH:
      return {batch, seq, heads * dim};
    case Layout::kSBH:
      return {seq, batch, heads * dim};
    case Layout::kBSND:
      return {batch, seq, heads, dim};
    case Layout::kBNSD:
      return {batch, heads, seq, dim};
    case Layout::kTND:
      return {seq, heads, dim};
  }
  return {};
}

}  // namespace attnserve::core
