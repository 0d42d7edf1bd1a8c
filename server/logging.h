// Process-wide log configuration: level and format (text or JSON lines).
//
//   ATTN_RETURN_IF_ERROR(ConfigureLogging("info", "json"));
//   spdlog::info("listening on {}", port);
//   // {"time":"2024-05-01T12:00:00.123Z","level":"info","logger":"attnserve",
//   //  "msg":"listening on 50051"}
//
// Text is spdlog's default line. JSON writes one object per line with
// "time" (UTC, RFC 3339, milliseconds), "level", "logger" and either "msg"
// (the message, escaped) or, for request records (the "request" logger, see
// request_log.h), the record's fields at the top level.
#ifndef ATTNSERVE_SERVER_LOGGING_H_
#define ATTNSERVE_SERVER_LOGGING_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spdlog/logger.h"

namespace attnserve::server {

enum class LogFormat { kText, kJson };

// Sets the level ("trace", "debug", "info", "warn", "error", "critical",
// "off") and format ("text" or "json") of the default logger and of the
// request logger. INVALID_ARGUMENT naming log_level / log_format for an
// unknown value. Not thread-safe: call at start-up, before logging starts.
absl::Status ConfigureLogging(absl::string_view level,
                              absl::string_view format);

// The format set by ConfigureLogging (text until then).
LogFormat CurrentLogFormat();

// `text` as the contents of a JSON string (quotes not included): ", \ and
// control characters escaped, invalid UTF-8 bytes replaced by U+FFFD.
std::string JsonEscape(absl::string_view text);

// The logger request records go to: named "request", sharing the default
// logger's sinks and level. Never null. Thread-safe.
std::shared_ptr<spdlog::logger> RequestLogger();

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_LOGGING_H_
