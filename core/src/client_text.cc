#include "attnserve/core/client_text.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace attnserve::core {

std::string ClientText(absl::string_view text) {
  constexpr size_t kShown = 32;
  // absl::CHexEscape's escapes, and the space's: \x20. A hex digit right
  // after a \xNN escape is escaped too, or a reader would take it for part
  // of the escape (" a" is \x20\x61, not \x20a, which C reads as 0x20a).
  std::string shown;
  bool after_hex = false;
  for (const char ch : text.substr(0, kShown)) {
    const unsigned char c = static_cast<unsigned char>(ch);
    const char* named = nullptr;
    switch (c) {
      case '\n':
        named = "\\n";
        break;
      case '\r':
        named = "\\r";
        break;
      case '\t':
        named = "\\t";
        break;
      case '"':
        named = "\\\"";
        break;
      case '\'':
        named = "\\'";
        break;
      case '\\':
        named = "\\\\";
        break;
      default:
        break;
    }
    if (named != nullptr) {
      shown += named;
      after_hex = false;
    } else if (c <= ' ' || c >= 0x7F ||
               (after_hex && absl::ascii_isxdigit(c))) {
      absl::StrAppend(&shown, "\\x", absl::Hex(c, absl::kZeroPad2));
      after_hex = true;
    } else {
      shown.push_back(ch);
      after_hex = false;
    }
  }
  if (text.size() > kShown) {
    absl::StrAppend(&shown, "...(", text.size(), " bytes)");
  }
  return shown;
}

}  // namespace attnserve::core
