// What the fuzz targets use to stop on a broken property: the message on
// standard error, then abort(), which libFuzzer reports as a crash and saves
// the input for.
//
//   FUZZ_CHECK(line.find('\n') == std::string::npos, "a newline in ", line);
// (at least one message argument).
#ifndef ATTNSERVE_FUZZ_FUZZ_CHECK_H_
#define ATTNSERVE_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace attnserve::fuzz {

[[noreturn]] inline void Fail(const char* file, int line,
                              const std::string& what) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line,
               what.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace attnserve::fuzz

#define FUZZ_CHECK(condition, ...)                                            \
  do {                                                                        \
    if (!(condition)) {                                                       \
      ::attnserve::fuzz::Fail(__FILE__, __LINE__,                             \
                              ::absl::StrCat(#condition, ": ", __VA_ARGS__)); \
    }                                                                         \
  } while (false)

#endif  // ATTNSERVE_FUZZ_FUZZ_CHECK_H_
