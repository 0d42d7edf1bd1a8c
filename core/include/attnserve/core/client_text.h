// A client's string as it may appear in a message or a log line.
//
//   ClientText("BSND")             // BSND
//   ClientText("BSND status=OK\n") // BSND\x20status=OK\n (escaped, one line)
//   ClientText(std::string(1000, 'A'))  // 32 A's then ...(1000 bytes)
//
// Control, space, quote, backslash and non-ASCII bytes are escaped C-style
// and the text is cut after 32 bytes with its full length added, so a client
// can neither start a log line, nor add a field to one, nor flood it.
#ifndef ATTNSERVE_CORE_CLIENT_TEXT_H_
#define ATTNSERVE_CORE_CLIENT_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace attnserve::core {

std::string ClientText(absl::string_view text);

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_CLIENT_TEXT_H_
