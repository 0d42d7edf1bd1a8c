// The token file parser and the token check (server/token_auth.h) against
// a reading of the file written here from its description.
//
// Input: a token file's text, optionally followed by a NUL byte and an
// `authorization` header value. The file must be accepted exactly when the
// reference accepts it, with as many tokens; then every token it lists must
// pass as "Bearer <token>" (any case of the scheme, surrounding white
// space) for the RPCs of its first line and be PERMISSION_DENIED for
// others, a token it does not list must be UNAUTHENTICATED, and the header
// value from the input must get the answer the reference gives.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_check.h"
#include "server/token_auth.h"

namespace attnserve::fuzz {
namespace {

struct Grant {
  std::string token;
  std::vector<std::string> methods;  // Empty: every RPC.
};

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

std::string Strip(absl::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// Splits `s` at any of `separators`, dropping empty pieces.
std::vector<std::string> Words(const std::string& s, const char* separators) {
  std::vector<std::string> words;
  std::string word;
  for (char c : s) {
    if (std::string(separators).find(c) != std::string::npos) {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(word);
  return words;
}

// The token file as token_auth.h describes it: one token per line (at
// least 16 printable ASCII characters, no spaces), optionally followed by
// comma-separated RPC names; blank lines and '#' lines ignored; at least one
// token. False for a file to refuse.
bool ReadTokens(absl::string_view text, std::vector<Grant>* grants) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == absl::string_view::npos) end = text.size();
    const std::string line = Strip(text.substr(start, end - start));
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> words = Words(line, " \t");
    if (words.size() > 2 || words[0].size() < 16) return false;
    for (char c : words[0]) {
      if (!(c > ' ' && c < 0x7F)) return false;
    }
    Grant grant{words[0], {}};
    if (words.size() == 2) grant.methods = Words(words[1], ",");
    grants->push_back(grant);
  }
  return !grants->empty();
}

// The answer to `authorization` for `method`: the first grant of the
// presented token decides.
absl::StatusCode Expected(const std::vector<Grant>& grants,
                          absl::string_view authorization,
                          const std::string& method) {
  if (authorization.size() < 7) return absl::StatusCode::kUnauthenticated;
  const std::string scheme(authorization.substr(0, 7));
  for (size_t i = 0; i < 7; ++i) {
    const char c = scheme[i];
    const char want = "bearer "[i];
    if (c != want && !(c >= 'A' && c <= 'Z' && c - 'A' + 'a' == want)) {
      return absl::StatusCode::kUnauthenticated;
    }
  }
  const std::string token = Strip(authorization.substr(7));
  for (const Grant& g : grants) {
    if (g.token != token) continue;
    if (g.methods.empty()) return absl::StatusCode::kOk;
    for (const std::string& m : g.methods) {
      if (m == method) return absl::StatusCode::kOk;
    }
    return absl::StatusCode::kPermissionDenied;
  }
  return absl::StatusCode::kUnauthenticated;
}

void CheckAnswer(const server::TokenAuth& auth,
                 const std::vector<Grant>& grants,
                 absl::string_view authorization, const std::string& method) {
  const absl::Status got = auth.Check(authorization, method);
  const absl::StatusCode want = Expected(grants, authorization, method);
  FUZZ_CHECK(got.code() == want, "Check(\"", absl::CHexEscape(authorization),
             "\", ", method, ") = ", got.ToString(), ", want ",
             absl::StatusCodeToString(want));
}

}  // namespace
}  // namespace attnserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fz = attnserve::fuzz;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const absl::string_view text = input.substr(0, nul);
  const absl::string_view header = nul == absl::string_view::npos
                                       ? absl::string_view()
                                       : input.substr(nul + 1);

  std::vector<fz::Grant> grants;
  const bool valid = fz::ReadTokens(text, &grants);
  const absl::StatusOr<attnserve::server::TokenAuth> auth =
      attnserve::server::TokenAuth::FromText(text);
  FUZZ_CHECK(auth.ok() == valid, "FromText: ", auth.status().ToString(),
             ", the reference ", valid ? "accepts" : "refuses", " \"",
             absl::CHexEscape(text), "\"");
  if (!auth.ok()) {
    FUZZ_CHECK(auth.status().code() == absl::StatusCode::kInvalidArgument,
               auth.status().ToString());
    return 0;
  }
  FUZZ_CHECK(auth->token_count() == static_cast<int>(grants.size()),
             auth->token_count(), " tokens, the reference reads ",
             grants.size());

  const std::string methods[] = {"FlashAttentionScore", "GetServerInfo",
                                 "NotAnRpc"};
  for (const fz::Grant& g : grants) {
    for (const std::string& method : methods) {
      fz::CheckAnswer(*auth, grants, "Bearer " + g.token, method);
      fz::CheckAnswer(*auth, grants, "bEaReR \t" + g.token + " ", method);
      fz::CheckAnswer(*auth, grants, "Bearer " + g.token + "x", method);
    }
    for (const std::string& method : g.methods) {
      fz::CheckAnswer(*auth, grants, "Bearer " + g.token, method);
    }
  }
  for (const std::string& method : methods) {
    fz::CheckAnswer(*auth, grants, header, method);
  }
  fz::CheckAnswer(*auth, grants, "", "GetServerInfo");
  return 0;
}
