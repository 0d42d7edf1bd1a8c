// The request log's formatting: client text (core::ClientText), JSON
// escaping (server::JsonEscape) and the request record as a text line and
// as JSON members (server/request_log.h), with strings from the input.
//
// - ClientText(s): printable ASCII without spaces, except the " ...(N
//   bytes)" it adds after the first 32 bytes of a longer s; C-unescaping it
//   gives those first 32 bytes back exactly.
// - JsonEscape(s): no control bytes, valid UTF-8 (checked strictly here:
//   no overlong forms, no surrogates, nothing above U+10FFFF), and reading
//   it as a JSON string gives s with each byte that does not start a valid
//   UTF-8 sequence replaced by U+FFFD.
// - The record's JSON members in braces are a JSON object whose strings
//   read back as above; the text line is one line.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "attnserve/core/client_text.h"
#include "attnserve/v1/attention.pb.h"
#include "attnserve/wire/dtype.h"
#include "fuzz/fuzz_check.h"
#include "fuzzer/FuzzedDataProvider.h"
#include "server/logging.h"
#include "server/request_log.h"

namespace attnserve::fuzz {
namespace {

// Length of the valid UTF-8 sequence at s[i] (RFC 3629), or 0.
size_t Utf8Length(absl::string_view s, size_t i) {
  const auto at = [&](size_t k) -> int {
    return k < s.size() ? static_cast<unsigned char>(s[k]) : -1;
  };
  const int c = at(i);
  const auto cont = [&](size_t k, int lo, int hi) {
    const int b = at(k);
    return b >= lo && b <= hi;
  };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1, 0x80, 0xBF) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const int lo = c == 0xE0 ? 0xA0 : 0x80;  // No overlong forms.
    const int hi = c == 0xED ? 0x9F : 0xBF;  // No surrogates.
    return cont(i + 1, lo, hi) && cont(i + 2, 0x80, 0xBF) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const int lo = c == 0xF0 ? 0x90 : 0x80;  // No overlong forms.
    const int hi = c == 0xF4 ? 0x8F : 0xBF;  // Up to U+10FFFF.
    return cont(i + 1, lo, hi) && cont(i + 2, 0x80, 0xBF) &&
                   cont(i + 3, 0x80, 0xBF)
               ? 4
               : 0;
  }
  return 0;
}

bool ValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// `s` with every byte that starts no valid sequence replaced by U+FFFD.
std::string Sanitized(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Length(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A JSON reader for what the log writes: objects of strings and numbers.
class JsonReader {
 public:
  explicit JsonReader(std::string text) : text_(std::move(text)) {}

  // Reads a string at the cursor (after its opening quote is checked);
  // false when it is not one.
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    out->clear();
    while (pos_ < text_.size()) {
      const unsigned char c = static_cast<unsigned char>(text_[pos_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        continue;
      }
      if (pos_ >= text_.size()) return false;
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          if (pos_ + 4 > text_.size()) return false;
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = text_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') {
              cp |= static_cast<uint32_t>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              cp |= static_cast<uint32_t>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
              cp |= static_cast<uint32_t>(h - 'A' + 10);
            } else {
              return false;
            }
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) return false;  // Not written.
          AppendUtf8(cp, out);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  // A JSON number (strictly: -?int(.digits)?(e[+-]?digits)?).
  bool Number() {
    const size_t start = pos_;
    Eat('-');
    if (!Digits()) return false;
    if (Eat('.') && !Digits()) return false;
    if (Eat('e') || Eat('E')) {
      if (!Eat('+')) Eat('-');
      if (!Digits()) return false;
    }
    return pos_ > start;
  }

  // An object of string and number members; `strings` gets the strings.
  bool Object(std::vector<std::pair<std::string, std::string>>* strings) {
    if (!Eat('{')) return false;
    if (Eat('}')) return AtEnd();
    do {
      std::string key, value;
      if (!String(&key) || !Eat(':')) return false;
      if (Peek() == '"') {
        if (!String(&value)) return false;
        strings->emplace_back(key, value);
      } else if (!Number()) {
        return false;
      }
    } while (Eat(','));
    return Eat('}') && AtEnd();
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c || pos_ >= text_.size()) return false;
    ++pos_;
    return true;
  }
  bool Digits() {
    const size_t start = pos_;
    while (Peek() >= '0' && Peek() <= '9') ++pos_;
    return pos_ > start;
  }
  bool AtEnd() const { return pos_ == text_.size(); }

  const std::string text_;
  size_t pos_ = 0;
};

void CheckClientText(absl::string_view s) {
  const std::string shown = core::ClientText(s);
  std::string escaped = shown;
  if (s.size() > 32) {
    const std::string suffix = absl::StrCat("...(", s.size(), " bytes)");
    FUZZ_CHECK(shown.size() >= suffix.size() &&
                   shown.compare(shown.size() - suffix.size(), suffix.size(),
                                 suffix) == 0,
               "ClientText of ", s.size(), " bytes ends without ", suffix, ": ",
               shown);
    escaped.resize(shown.size() - suffix.size());
  }
  for (char c : escaped) {
    FUZZ_CHECK(c > ' ' && c < 0x7F, "ClientText(\"", absl::CHexEscape(s),
               "\") = \"", absl::CHexEscape(shown),
               "\" has a space or a byte outside printable ASCII");
  }
  std::string unescaped;
  std::string error;
  const bool ok = absl::CUnescape(escaped, &unescaped, &error);
  FUZZ_CHECK(ok && unescaped == s.substr(0, 32), "ClientText(\"",
             absl::CHexEscape(s), "\") = \"", shown,
             "\", which reads back as \"", absl::CHexEscape(unescaped), "\" ",
             error);
}

void CheckJsonEscape(absl::string_view s) {
  const std::string escaped = server::JsonEscape(s);
  FUZZ_CHECK(ValidUtf8(escaped), "JsonEscape(\"", absl::CHexEscape(s),
             "\") is not valid UTF-8: \"", absl::CHexEscape(escaped), "\"");
  std::string read;
  JsonReader reader("\"" + escaped + "\"");
  FUZZ_CHECK(reader.String(&read), "JsonEscape(\"", absl::CHexEscape(s),
             "\") is not the inside of a JSON string: \"",
             absl::CHexEscape(escaped), "\"");
  FUZZ_CHECK(read == Sanitized(s), "JsonEscape(\"", absl::CHexEscape(s),
             "\") reads back as \"", absl::CHexEscape(read), "\"");
}

// Seconds (up to ~12 days) or FLOPs (up to 1e30) as a call can take or
// have: finite and non-negative.
double Amount(FuzzedDataProvider& in, double most) {
  return in.ConsumeFloatingPointInRange<double>(0, most);
}

std::string Shape(FuzzedDataProvider& in) {
  v1::Tensor tensor;
  if (in.ConsumeBool()) tensor.set_handle("h");
  const int rank = in.ConsumeIntegralInRange(0, 9);
  for (int i = 0; i < rank; ++i) {
    tensor.add_shape(in.ConsumeIntegral<int64_t>());
  }
  return server::LoggedShape(tensor);
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = attnserve::fuzz;
  namespace srv = attnserve::server;
  FuzzedDataProvider in(data, size);
  const std::string layout = in.ConsumeRandomLengthString(200);
  const std::string error = in.ConsumeRandomLengthString(300);
  fz::CheckClientText(layout);
  fz::CheckClientText(error);
  fz::CheckJsonEscape(layout);
  fz::CheckJsonEscape(error);

  srv::RequestRecord record;
  record.op = in.ConsumeBool() ? "FlashAttentionScore" : "GetWorkspaceSize";
  record.request_id = in.ConsumeBool() ? in.ConsumeRandomLengthString(40) : "";
  record.q_shape = fz::Shape(in);
  record.k_shape = fz::Shape(in);
  record.v_shape = fz::Shape(in);
  record.dtype = attnserve::wire::DataTypeName(in.ConsumeIntegral<int>());
  record.layout = attnserve::core::ClientText(layout);
  record.code = static_cast<absl::StatusCode>(in.ConsumeIntegralInRange(0, 16));
  record.error = error;
  record.scheduled = in.ConsumeBool();
  record.large = in.ConsumeBool();
  record.queue_seconds = fz::Amount(in, 1e6);
  record.compute_seconds = fz::Amount(in, 1e6);
  record.flops = fz::Amount(in, 1e30);
  record.cancel_to_free_seconds = in.ConsumeBool() ? fz::Amount(in, 1e6) : -1;

  const std::string json = "{" + srv::FormatRequestJsonFields(record) + "}";
  std::vector<std::pair<std::string, std::string>> strings;
  fz::JsonReader reader(json);
  FUZZ_CHECK(reader.Object(&strings),
             "not a JSON object: ", absl::CHexEscape(json));
  for (const auto& [key, value] : strings) {
    std::string sent;
    if (key == "request_id") sent = record.request_id;
    if (key == "layout") sent = record.layout;
    if (key == "error") sent = record.error;
    if (key == "q") sent = record.q_shape;
    if (key == "dtype") sent = record.dtype;
    if (sent.empty()) continue;
    FUZZ_CHECK(value == fz::Sanitized(sent), "JSON member ", key,
               " reads back as \"", absl::CHexEscape(value), "\" for \"",
               absl::CHexEscape(sent), "\"");
  }

  // The text line: the error as the server's messages carry client text.
  record.request_id.clear();
  record.error = absl::StrCat("input_layout: ", record.layout, " is unknown");
  const std::string line = srv::FormatRequestLine(record);
  for (char c : line) {
    FUZZ_CHECK(c >= ' ' && c < 0x7F,
               "log line with a byte outside printable "
               "ASCII: ",
               absl::CHexEscape(line));
  }
  return 0;
}
