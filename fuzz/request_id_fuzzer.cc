// Request-id validation (server/call_tracker.h): a received x-request-id is
// used as it is exactly when it is 1 to 128 of [A-Za-z0-9._:-], checked here
// against that rule written out; an accepted id (and every generated one)
// must then appear in the log line and its JSON form as it is, one word that
// needs no escaping.
//
// Input: the received id's bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_check.h"
#include "server/call_tracker.h"
#include "server/logging.h"
#include "server/request_log.h"

namespace attnserve::fuzz {
namespace {

bool Allowed(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  static const std::string kAllowed =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
  return id.find_first_not_of(kAllowed) == absl::string_view::npos;
}

// `id`, valid, is one word of the text line and needs no JSON escaping.
void CheckLogged(const std::string& id) {
  server::RequestRecord record;
  record.op = "FlashAttentionScore";
  record.request_id = id;
  const std::string line = server::FormatRequestLine(record);
  const std::string word = " request_id=" + id + " ";
  FUZZ_CHECK(line.find(word) != std::string::npos, "no \"", word, "\" in ",
             absl::CHexEscape(line));
  FUZZ_CHECK(server::JsonEscape(id) == id, "the id ", id,
             " changes when escaped for JSON");
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = attnserve::fuzz;
  const absl::string_view id(reinterpret_cast<const char*>(data), size);
  const bool valid = attnserve::server::IsValidRequestId(id);
  FUZZ_CHECK(valid == fz::Allowed(id), "IsValidRequestId(\"",
             absl::CHexEscape(id), "\") = ", valid);
  if (valid) fz::CheckLogged(std::string(id));
  // Once in a while (every input would be slow: it reads the random
  // generator), a generated id.
  if (size > 0 && data[0] == 'g') {
    const std::string generated = attnserve::server::NewRequestId();
    FUZZ_CHECK(generated.size() == 32 &&
                   generated.find_first_not_of("0123456789abcdef") ==
                       std::string::npos &&
                   attnserve::server::IsValidRequestId(generated),
               "generated id ", generated);
    fz::CheckLogged(generated);
  }
  return 0;
}
