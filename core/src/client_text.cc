#include "attnserve/core/client_text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace attnserve::core {

std::string ClientText(absl::string_view text) {
  constexpr size_t kShown = 32;
  std::string shown = absl::StrReplaceAll(
      absl::CHexEscape(text.substr(0, kShown)), {{" ", "\\x20"}});
  if (text.size() > kShown) {
    absl::StrAppend(&shown, "...(", text.size(), " bytes)");
  }
  return shown;
}

}  // namespace attnserve::core
