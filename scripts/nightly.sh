#!/usr/bin/env bash
# The long checks that do not fit CI's time, one after the other:
#   1. ThreadSanitizer over the in-process server tests
#      (scripts/test.sh --thread-sanitize; clean with the suppressions of
#      tests/tsan/suppressions.txt, which hold only reports inside
#      libraries not built with ThreadSanitizer);
#   2. every fuzz target for 10 minutes (scripts/fuzz.sh 600);
#   3. a 15-minute soak of a real server (soak_e2e_test with
#      ATTNSERVE_SOAK_SECONDS=900) on the Release build of scripts/test.sh.
# Fails when any of them fails; each prints its own summary.
#   scripts/nightly.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
run() {
  local name=$1
  shift
  local t0
  t0=$(date +%s)
  echo "== nightly: $name"
  if "$@"; then
    echo "== nightly: $name passed in $(( $(date +%s) - t0 )) s"
  else
    echo "== nightly: $name FAILED after $(( $(date +%s) - t0 )) s"
    status=1
  fi
}
run "ThreadSanitizer" "$root/scripts/test.sh" --thread-sanitize
run "fuzzing" "$root/scripts/fuzz.sh" 600
soak() {
  "$root/scripts/build.sh" "$root/build" -DATTNSERVE_BUILD_TESTS=ON &&
    ATTNSERVE_SOAK_SECONDS=900 "$root/build/tests/e2e/soak_e2e_test"
}
run "soak" soak
exit $status
