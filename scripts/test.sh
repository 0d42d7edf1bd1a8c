#!/usr/bin/env bash
# Installs the dependencies, builds attnserve with its tests (Release) and
# runs every test with ctest. With --sanitize, builds the unit tests only in
# build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# them (labels core, server and client). Extra arguments go to ctest, e.g.
#   scripts/test.sh -L server
# Prints how many test cases ran (scripts/test-summary.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
jobs=$(nproc 2>/dev/null || echo 2)
ctest_args=()
t0=$(date +%s)
if [ "${1:-}" = "--sanitize" ]; then
  shift
  build_dir="$root/build-asan"
  # -O1 with line tables: the sanitizers' usual setting, and less than half
  # the compile time of -O2 -g; reports still name file and line (relative
  # to the source tree, so that objects do not depend on where it is). The
  # test code at -O0 halves its compile time again.
  flags="-O1 -g1 -DNDEBUG -fdebug-prefix-map=$root=."
  "$root/scripts/build.sh" --target unit_tests "$build_dir" \
    -DATTNSERVE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$flags" \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$flags" \
    -DATTNSERVE_TEST_OPTIMIZATION=-O0 \
    -DATTNSERVE_BUILD_TESTS=ON -DATTNSERVE_BUILD_E2E_TESTS=OFF
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest_args=(-L 'core|server|client')
else
  build_dir="$root/build"
  "$root/scripts/build.sh" "$build_dir" -DATTNSERVE_BUILD_TESTS=ON
fi
echo "test.sh: built in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
rm -rf "$build_dir/test-results"
mkdir -p "$build_dir/test-results"
status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" \
  --output-junit "$build_dir/test-results/ctest.xml" "${ctest_args[@]}" "$@" ||
  status=$?
echo "test.sh: tests ran in $(( $(date +%s) - t0 )) s"
"$root/scripts/test-summary.sh" "$build_dir" || status=1
exit $status
