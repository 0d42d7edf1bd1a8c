#include "server/logging.h"

#include <atomic>
#include <ctime>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "attnserve/core/status_macros.h"
#include "spdlog/formatter.h"
#include "spdlog/spdlog.h"

namespace attnserve::server {
namespace {

constexpr char kRequestLoggerName[] = "request";

std::atomic<LogFormat> g_format{LogFormat::kText};

absl::Mutex g_request_logger_mu;
std::shared_ptr<spdlog::logger> g_request_logger
    ABSL_GUARDED_BY(g_request_logger_mu);

// One JSON object per line; see logging.h.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
        since_epoch - seconds);
    const std::time_t t = static_cast<std::time_t>(seconds.count());
    std::tm utc{};
    gmtime_r(&t, &utc);
    const absl::string_view level_name(
        spdlog::level::to_string_view(msg.level).data(),
        spdlog::level::to_string_view(msg.level).size());
    const absl::string_view logger(msg.logger_name.data(),
                                   msg.logger_name.size());
    const absl::string_view payload(msg.payload.data(), msg.payload.size());
    std::string line = absl::StrFormat(
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\","
        "\"logger\":\"%s\",",
        utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
        utc.tm_min, utc.tm_sec, static_cast<int>(millis.count()), level_name,
        JsonEscape(logger.empty() ? "attnserve" : logger));
    if (logger == kRequestLoggerName) {
      // Request records arrive as ready-made JSON members.
      absl::StrAppend(&line, payload, "}\n");
    } else {
      absl::StrAppend(&line, "\"msg\":\"", JsonEscape(payload), "\"}\n");
    }
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// Length of the valid UTF-8 sequence starting at text[i], or 0. Valid as
// RFC 3629 has it: no overlong forms (E0 80..9F, F0 80..8F), no UTF-16
// surrogates (ED A0..BF) and nothing above U+10FFFF (F4 90..BF), which the
// second byte's range rules out.
size_t Utf8SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) {
    return static_cast<unsigned char>(text[k]);
  };
  const unsigned char c = byte(i);
  size_t length = 0;
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    if (c == 0xE0) second_min = 0xA0;
    if (c == 0xED) second_max = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    if (c == 0xF0) second_min = 0x90;
    if (c == 0xF4) second_max = 0x8F;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < second_min || byte(i + 1) > second_max) return 0;
  for (size_t k = 2; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return length;
}

}  // namespace

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\u%04x", c);
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      const size_t length = Utf8SequenceLength(text, i);
      if (length == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD
        ++i;
        continue;
      }
      out.append(text.data() + i, length);
      i += length;
      continue;
    }
    ++i;
  }
  return out;
}

absl::Status ConfigureLogging(absl::string_view level,
                              absl::string_view format) {
  const std::string level_name(level);
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level_name);
  if (parsed == spdlog::level::off && level != "off") {
    return core::InvalidField(
        "log_level",
        absl::StrCat("must be one of trace, debug, info, warn, error, "
                     "critical, off; got \"",
                     level, "\""));
  }
  LogFormat log_format;
  if (format == "text") {
    log_format = LogFormat::kText;
  } else if (format == "json") {
    log_format = LogFormat::kJson;
  } else {
    return core::InvalidField(
        "log_format",
        absl::StrCat("must be text or json; got \"", format, "\""));
  }
  g_format = log_format;
  spdlog::set_level(parsed);
  if (log_format == LogFormat::kJson) {
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
  } else {
    spdlog::set_pattern("%+");
  }
  // The request logger is re-made from the default one on next use, so that
  // it picks up the new sinks' formatter and the level.
  absl::MutexLock lock(&g_request_logger_mu);
  g_request_logger.reset();
  return absl::OkStatus();
}

LogFormat CurrentLogFormat() { return g_format.load(); }

std::shared_ptr<spdlog::logger> RequestLogger() {
  absl::MutexLock lock(&g_request_logger_mu);
  if (g_request_logger == nullptr) {
    g_request_logger = spdlog::default_logger()->clone(kRequestLoggerName);
    g_request_logger->set_level(spdlog::default_logger()->level());
  }
  return g_request_logger;
}

}  // namespace attnserve::server
