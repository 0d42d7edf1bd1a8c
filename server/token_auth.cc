#include "server/token_auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnserve::server {
namespace {

constexpr size_t kMinTokenLength = 16;

bool IsTokenChar(char c) { return c > ' ' && c < 0x7F; }

}  // namespace

TokenAuth::Digest TokenAuth::Sha256(absl::string_view text) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         digest.data());
  return digest;
}

absl::StatusOr<TokenAuth> TokenAuth::FromText(absl::string_view text) {
  TokenAuth auth;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const absl::string_view token = parts[0];
    if (token.size() < kMinTokenLength ||
        !std::all_of(token.begin(), token.end(), IsTokenChar)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number, ": a token must be at least ",
          kMinTokenLength, " printable ASCII characters without spaces"));
    }
    if (parts.size() > 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number,
          ": expected `token [Rpc,Rpc,...]`, got ", parts.size(), " words"));
    }
    Grant grant;
    grant.digest = Sha256(token);
    if (parts.size() == 2) {
      for (absl::string_view method :
           absl::StrSplit(parts[1], ',', absl::SkipEmpty())) {
        grant.methods.emplace_back(method);
      }
    }
    auth.grants_.push_back(std::move(grant));
  }
  if (auth.grants_.empty()) {
    return absl::InvalidArgumentError("token file holds no token");
  }
  return auth;
}

absl::StatusOr<TokenAuth> TokenAuth::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string message =
        absl::StrCat("cannot read token file ", path, ": ", strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(message)
                           : absl::NotFoundError(message);
  }
  std::stringstream text;
  text << in.rdbuf();
  return FromText(text.str());
}

absl::Status TokenAuth::Check(absl::string_view authorization,
                              absl::string_view method) const {
  absl::string_view token = authorization;
  // The scheme is case-insensitive (RFC 7235).
  if (token.size() < 7 ||
      !absl::EqualsIgnoreCase(token.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError(
        "missing bearer token: send `authorization: Bearer <token>` metadata");
  }
  token = absl::StripAsciiWhitespace(token.substr(7));
  const Digest presented = Sha256(token);
  const Grant* match = nullptr;
  for (const Grant& grant : grants_) {
    // Every digest is compared in full: the time does not depend on which
    // token (if any) matched, nor on how many leading bytes agree.
    const bool equal = CRYPTO_memcmp(presented.data(), grant.digest.data(),
                                     presented.size()) == 0;
    if (equal && match == nullptr) match = &grant;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  if (!match->methods.empty() &&
      std::find(match->methods.begin(), match->methods.end(), method) ==
          match->methods.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("this token is not allowed to call ", method));
  }
  return absl::OkStatus();
}

absl::Status TokenAuth::Check(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    absl::string_view method) const {
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return Check(absl::string_view(), method);
  return Check(absl::string_view(it->second.data(), it->second.size()), method);
}

}  // namespace attnserve::server
