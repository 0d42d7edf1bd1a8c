#!/usr/bin/env bash
# Counts what the last ctest run in a build directory ran: the GoogleTest
# cases (from the XML results each test binary writes to test-results/) and
# the other ctest tests (from ctest's JUnit report test-results/ctest.xml,
# written by `ctest --output-junit`). Lists failed and skipped cases.
#   scripts/test-summary.sh [BUILD_DIR]
# Exits non-zero when a case failed or a test binary left no results.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${1:-$root/build}
results="$build_dir/test-results"
shopt -s nullglob
xmls=()
for f in "$results"/*.xml; do
  [ "$(basename "$f")" = ctest.xml ] || xmls+=("$f")
done
if [ ${#xmls[@]} -eq 0 ]; then
  echo "test-summary: no GoogleTest results in $results"
  exit 1
fi

# GoogleTest's XML: the <testsuites> element counts the cases of the binary
# (or shard) that ran; every <testcase> says whether it was skipped; a
# failed case holds <failure> elements.
awk '
  FNR == 1 {
    files++
    binary = FILENAME; sub(/.*\//, "", binary); sub(/\.xml$/, "", binary)
  }
  /<testsuites / {
    match($0, / tests="[0-9]+"/); tests += substr($0, RSTART + 8, RLENGTH - 9)
    match($0, / disabled="[0-9]+"/); disabled += substr($0, RSTART + 11, RLENGTH - 12)
  }
  /<testcase / {
    match($0, / name="[^"]*"/); name = substr($0, RSTART + 7, RLENGTH - 8)
    match($0, / classname="[^"]*"/); suite = substr($0, RSTART + 12, RLENGTH - 13)
    current = binary ": " suite "." name
    if ($0 ~ /result="skipped"/) { skipped++; skipped_names = skipped_names "\n  " current }
  }
  /<skipped message="/ {
    # "file:line&#x0A;reason": the reason.
    match($0, /message="[^"]*"/); why = substr($0, RSTART + 9, RLENGTH - 10)
    sub(/^[^&]*&#x0A;/, "", why); gsub(/&#x0A;/, " ", why)
    gsub(/&quot;/, "\"", why); gsub(/&apos;/, "\047", why); gsub(/&lt;/, "<", why)
    gsub(/&gt;/, ">", why); gsub(/&amp;/, "\\&", why)
    if (why != "") skipped_names = skipped_names " (" why ")"
  }
  /<failure / {
    if (!(current in failed)) { failed[current] = 1; nfailed++;
                                 failed_names = failed_names "\n  " current }
  }
  END {
    run = tests - disabled
    printf "GoogleTest: %d cases run by %d test binaries/shards: %d passed, %d failed, %d skipped", \
           run, files, run - nfailed - skipped, nfailed, skipped
    if (disabled) printf ", %d disabled", disabled
    printf "\n"
    if (nfailed) printf "failed:%s\n", failed_names
    if (skipped) printf "skipped:%s\n", skipped_names
    exit nfailed > 0
  }' "${xmls[@]}" || status=1

# ctest's own report: how many ctest tests ran and how many of them are
# not GoogleTest binaries (lint, scripts). A binary that crashed or timed out
# wrote no XML; its cases are missing from the count above.
if [ -f "$results/ctest.xml" ]; then
  awk -v results="$results" '
    /<testcase / {
      match($0, / name="[^"]*"/); name = substr($0, RSTART + 7, RLENGTH - 8)
      total++
      file = name; gsub("/", ".", file); file = results "/" file ".xml"
      if ((getline line < file) > 0) { close(file); gtest++ }
      else if ($0 ~ /status="fail"/) { nolog = nolog "\n  " name }
    }
    END {
      printf "ctest: %d tests: %d GoogleTest binaries/shards, %d others\n", \
             total, gtest, total - gtest
      if (nolog != "") {
        printf "failed without GoogleTest results (crashed, timed out, or not GoogleTest):%s\n", nolog
        exit 1
      }
    }' "$results/ctest.xml" || status=1
fi
exit "${status:-0}"
