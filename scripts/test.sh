#!/usr/bin/env bash
# Installs the dependencies, builds attnserve with its tests (Release) and
# runs every test with ctest. With --sanitize, builds the unit tests only in
# build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# them (labels core, server and client). With --thread-sanitize, builds those
# of the label server (the server, its scheduler and the wire library) with
# clang and ThreadSanitizer in build-tsan/ and runs them. Extra arguments go to
# ctest, e.g.
#   scripts/test.sh -L server
# Prints how many test cases ran (scripts/test-summary.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--thread-sanitize" ]; then
  "$root/scripts/install-deps.sh" --clang
else
  "$root/scripts/install-deps.sh"
fi
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
elif [ "${1:-}" = "--thread-sanitize" ]; then
  shift
  build_dir="$root/build-tsan"
  # The same optimization as --sanitize; clang, which has ThreadSanitizer's
  # runtime for the libraries Debian builds with GCC.
  "$root/scripts/build.sh" --target server_unit_tests "$build_dir" \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DATTNSERVE_THREAD_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
    -DATTNSERVE_TEST_OPTIMIZATION=-O0 \
    -DATTNSERVE_BUILD_TESTS=ON -DATTNSERVE_BUILD_E2E_TESTS=OFF \
    ${ATTNSERVE_TSAN_CMAKE_ARGS:-}
  # halt_on_error: the first report fails its test, which prints it.
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan/suppressions.txt"
  ctest_args=(-L server)
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
