#!/usr/bin/env bash
# Fails when a C++ source of attnserve is not clang-format clean (Google
# style, see .clang-format). Prints the offending files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  'core/*.cc' 'core/*.h' 'wire/*.cc' 'wire/*.h' 'server/*.cc' 'server/*.h' \
  'client/*.cc' 'client/*.h' 'fuzz/*.cc' 'fuzz/*.h' \
  'tests/*.cc' 'tests/*.h' 'bench/*.cc' 'bench/*.h')
if [ ${#files[@]} -eq 0 ]; then echo "no sources found"; exit 1; fi
# One clang-format process for every file (a process per file costs more
# than the formatting); on failure, the files it complained about.
if out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then exit 0; fi
bad=$(printf '%s\n' "$out" |
      sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: \(warning\|error\):.*/not formatted: \1/p' | sort -u)
if [ -n "$bad" ]; then echo "$bad"; else echo "$out"; fi
exit 1
