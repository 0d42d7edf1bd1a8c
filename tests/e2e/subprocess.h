// Running a program as a child process with a bounded run time and its
// output captured, for the end-to-end tests.
//
//   absl::StatusOr<ProcessResult> r =
//       RunProcess({"/path/attnctl", "health", "--target=127.0.0.1:5000"},
//                  absl::Seconds(30));
//   EXPECT_EQ(r->exit_code, 0) << r->err;
#ifndef ATTNSERVE_TESTS_E2E_SUBPROCESS_H_
#define ATTNSERVE_TESTS_E2E_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace attnserve::e2e {

struct ProcessResult {
  // The exit status, or -1 when the process died from a signal.
  int exit_code = -1;
  // True when the process outlived its timeout and was killed with SIGKILL.
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path; no PATH search) with `argv`, with `extra_env`
// ("NAME=value") added to this process's environment, and waits for it at
// most `timeout`. Fails only when the process cannot be started; a non-zero
// exit or a timeout is reported in the result. Thread-compatible.
absl::StatusOr<ProcessResult> RunProcess(
    const std::vector<std::string>& argv, absl::Duration timeout,
    const std::vector<std::string>& extra_env = {});

// Starts `binary args...` in the background with stdout and stderr in
// `log_path` (truncated) and stdin from /dev/null; the child's pid. The child
// gets SIGTERM when the thread that started it dies, so that a test killed
// by its timeout leaves no process behind. The caller reaps it (waitpid).
absl::StatusOr<pid_t> SpawnWithLog(const std::string& binary,
                                   const std::vector<std::string>& args,
                                   const std::string& log_path);

// The result as text for failure messages: exit code, stdout and stderr.
std::string Describe(const ProcessResult& result);

}  // namespace attnserve::e2e

#endif  // ATTNSERVE_TESTS_E2E_SUBPROCESS_H_
