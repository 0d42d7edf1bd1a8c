// gMock matchers and assertion macros for absl::Status and absl::StatusOr.
//
// Debian's abseil ships no status matchers, so tests use these:
//
//   EXPECT_THAT(PlanForward(args), StatusIs(absl::StatusCode::kInvalidArgument,
//                                           HasSubstr("head_num")));
//   EXPECT_THAT(token.Check(), IsOk());
//   ATTN_ASSERT_OK_AND_ASSIGN(ForwardPlan plan, PlanForward(args));
//
// Both matchers accept an absl::Status or any absl::StatusOr<T>; the message
// matcher of StatusIs sees the status message.
#ifndef ATTNSERVE_TESTS_TESTING_STATUS_MATCHERS_H_
#define ATTNSERVE_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnserve::test {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// Polymorphic: matches Status and StatusOr<T> alike.
class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code,
                  ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename StatusLike>
  bool MatchAndExplain(const StatusLike& value,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(value);
    if (status.code() != code_) {
      *listener << "whose code is " << absl::StatusCodeToString(status.code())
                << " (status " << status.ToString() << ")";
      return false;
    }
    const std::string message(status.message());
    ::testing::StringMatchResultListener inner;
    if (!message_.MatchAndExplain(message, &inner)) {
      *listener << "whose message \"" << message << "\" does not match";
      if (!inner.str().empty()) *listener << ", " << inner.str();
      return false;
    }
    return true;
  }

  void DescribeTo(std::ostream* os) const {
    *os << "has code " << absl::StatusCodeToString(code_)
        << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have code " << absl::StatusCodeToString(code_)
        << " or has a message that ";
    message_.DescribeNegationTo(os);
  }

 private:
  absl::StatusCode code_;
  ::testing::Matcher<const std::string&> message_;
};

class IsOkMatcher {
 public:
  template <typename StatusLike>
  bool MatchAndExplain(const StatusLike& value,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(value);
    if (!status.ok()) *listener << "whose status is " << status.ToString();
    return status.ok();
  }
  void DescribeTo(std::ostream* os) const { *os << "is OK"; }
  void DescribeNegationTo(std::ostream* os) const { *os << "is not OK"; }
};

}  // namespace internal

// Matches a Status / StatusOr whose code is `code` and whose message matches
// `message` (a string matcher such as HasSubstr, or a plain string).
template <typename MessageMatcher>
::testing::PolymorphicMatcher<internal::StatusIsMatcher> StatusIs(
    absl::StatusCode code, MessageMatcher&& message) {
  return ::testing::MakePolymorphicMatcher(internal::StatusIsMatcher(
      code, ::testing::MatcherCast<const std::string&>(
                std::forward<MessageMatcher>(message))));
}

// Matches a Status / StatusOr whose code is `code`, whatever the message.
inline ::testing::PolymorphicMatcher<internal::StatusIsMatcher> StatusIs(
    absl::StatusCode code) {
  return StatusIs(code, ::testing::_);
}

// Matches an OK Status or a StatusOr holding a value.
inline ::testing::PolymorphicMatcher<internal::IsOkMatcher> IsOk() {
  return ::testing::MakePolymorphicMatcher(internal::IsOkMatcher());
}

}  // namespace attnserve::test

#define ATTN_EXPECT_OK(expr) EXPECT_THAT((expr), ::attnserve::test::IsOk())
#define ATTN_ASSERT_OK(expr) ASSERT_THAT((expr), ::attnserve::test::IsOk())

#define ATTN_TEST_CONCAT_INNER_(a, b) a##b
#define ATTN_TEST_CONCAT_(a, b) ATTN_TEST_CONCAT_INNER_(a, b)

// `lhs = value of expr`, or a fatal test failure showing the status. Usable
// only in functions returning void (like ASSERT_*).
#define ATTN_ASSERT_OK_AND_ASSIGN(lhs, expr)                                   \
  ATTN_ASSERT_OK_AND_ASSIGN_IMPL_(ATTN_TEST_CONCAT_(attn_test_sor_, __LINE__), \
                                  lhs, expr)
#define ATTN_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  ASSERT_THAT(tmp, ::attnserve::test::IsOk()) << #expr; \
  lhs = std::move(tmp).value()

#endif  // ATTNSERVE_TESTS_TESTING_STATUS_MATCHERS_H_
