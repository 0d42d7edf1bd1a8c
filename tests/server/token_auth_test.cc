#include "server/token_auth.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace attnserve::server {
namespace {

using ::attnserve::test::IsOk;
using ::attnserve::test::StatusIs;
using ::testing::HasSubstr;

constexpr char kTokens[] =
    "# operators\n"
    "ops-token-0123456789abcdef\n"
    "\n"
    "  monitor-token-0123456789   GetServerInfo,GetWorkspaceSize  \n";

TokenAuth Auth() {
  absl::StatusOr<TokenAuth> auth = TokenAuth::FromText(kTokens);
  EXPECT_THAT(auth, IsOk());
  return *std::move(auth);
}

TEST(TokenAuthTest, ParsesTokensSkippingCommentsAndBlankLines) {
  EXPECT_EQ(Auth().token_count(), 2);
}

TEST(TokenAuthTest, TokenWithoutListMayCallEveryRpc) {
  const TokenAuth auth = Auth();
  for (const char* rpc :
       {"FlashAttentionScore", "GetServerInfo", "NsaSelectedAttentionGrad"}) {
    EXPECT_THAT(auth.Check("Bearer ops-token-0123456789abcdef", rpc), IsOk());
  }
}

TEST(TokenAuthTest, SchemeIsCaseInsensitive) {
  EXPECT_THAT(
      Auth().Check("bearer ops-token-0123456789abcdef", "GetServerInfo"),
      IsOk());
}

TEST(TokenAuthTest, RestrictedTokenIsPermissionDeniedOutsideItsList) {
  const TokenAuth auth = Auth();
  EXPECT_THAT(auth.Check("Bearer monitor-token-0123456789", "GetServerInfo"),
              IsOk());
  EXPECT_THAT(
      auth.Check("Bearer monitor-token-0123456789", "FlashAttentionScore"),
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr("not allowed to call FlashAttentionScore")));
}

TEST(TokenAuthTest, MissingMalformedOrUnknownTokenIsUnauthenticated) {
  const TokenAuth auth = Auth();
  EXPECT_THAT(auth.Check("", "GetServerInfo"),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("missing bearer token")));
  EXPECT_THAT(auth.Check("Basic b3BzOnB3", "GetServerInfo"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(auth.Check("Bearer ops-token-0123456789abcdeX", "GetServerInfo"),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("invalid bearer token")));
  // A prefix of a valid token is not a valid token.
  EXPECT_THAT(auth.Check("Bearer ops-token", "GetServerInfo"),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(TokenAuthTest, ReadsTheAuthorizationMetadataEntry) {
  const TokenAuth auth = Auth();
  const std::string value = "Bearer ops-token-0123456789abcdef";
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  EXPECT_THAT(auth.Check(metadata, "GetServerInfo"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  metadata.emplace("authorization", value);
  EXPECT_THAT(auth.Check(metadata, "GetServerInfo"), IsOk());
}

TEST(TokenAuthTest, RejectsShortTokensAndEmptyFilesNamingTheLine) {
  EXPECT_THAT(
      TokenAuth::FromText("# nothing\n\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no token")));
  EXPECT_THAT(TokenAuth::FromText("ok-token-0123456789\nshort\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 2: a token must be at least 16")));
  EXPECT_THAT(
      TokenAuth::FromText("ok-token-0123456789 A B\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
}

TEST(TokenAuthTest, ReadsAFileAndReportsAMissingOne) {
  const std::string path = ::testing::TempDir() + "/token_auth_test_tokens";
  {
    std::ofstream out(path);
    out << kTokens;
  }
  absl::StatusOr<TokenAuth> auth = TokenAuth::FromFile(path);
  ASSERT_THAT(auth, IsOk());
  EXPECT_EQ(auth->token_count(), 2);
  std::remove(path.c_str());
  EXPECT_THAT(TokenAuth::FromFile(path),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

}  // namespace
}  // namespace attnserve::server
