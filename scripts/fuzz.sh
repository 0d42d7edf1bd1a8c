#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan, assertions
# on) in build-fuzz/ and runs each for SECONDS (default 60), one after the
# other, on the seeds that make_fuzz_corpus writes plus the corpus earlier
# runs kept. Prints each target's executions; fails when any target finds a
# crash (its input is saved in build-fuzz/fuzz-artifacts/).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 20
# TARGETs: request token request_id log dtype (default: all). Extra cmake
# arguments for the first configure come from ATTNSERVE_FUZZ_CMAKE_ARGS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request token request_id log dtype)
fi
"$root/scripts/install-deps.sh" --clang

build_dir="$root/build-fuzz"
t0=$(date +%s)
# -O1 with line tables and without NDEBUG: assertions stay on.
# shellcheck disable=SC2086
CC=clang CXX=clang++ "$root/scripts/build.sh" --target fuzzers "$build_dir" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1" \
  -DATTNSERVE_FUZZ=ON -DATTNSERVE_BUILD_TESTS=OFF \
  ${ATTNSERVE_FUZZ_CMAKE_ARGS:-}
echo "fuzz.sh: built in $(( $(date +%s) - t0 )) s"

corpus="$build_dir/fuzz-corpus"
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"
rm -rf "$corpus/seeds"
ASAN_OPTIONS=detect_leaks=0 "$build_dir/fuzz/make_fuzz_corpus" "$corpus/seeds"

export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for target in "${targets[@]}"; do
  binary="$build_dir/fuzz/${target}_fuzzer"
  if [ ! -x "$binary" ]; then
    echo "fuzz.sh: no fuzz target $target" >&2
    exit 2
  fi
  max_len=4096
  if [ "$target" = request ]; then max_len=65536; fi
  mkdir -p "$corpus/$target"
  log="$build_dir/fuzz-$target.log"
  result=ok
  "$binary" -max_total_time="$seconds" -timeout=25 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
    "$corpus/$target" "$corpus/seeds/$target" >"$log" 2>&1 || result=FAILED
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz.sh: $target: ${execs:-?} executions in $seconds s: $result"
  if [ "$result" != ok ]; then
    status=1
    grep -E "ERROR|fuzz check failed|runtime error|SUMMARY|Test unit written" \
      "$log" | head -20 || true
    echo "fuzz.sh: full output in $log"
  fi
done
exit $status
