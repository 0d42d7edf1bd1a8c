#!/usr/bin/env bash
# Fails when a C++ source of attnserve is not clang-format clean (Google
# style, see .clang-format). Prints the offending files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  'core/*.cc' 'core/*.h' 'wire/*.cc' 'wire/*.h' 'server/*.cc' 'server/*.h' \
  'client/*.cc' 'client/*.h' \
  'tests/*.cc' 'tests/*.h' 'bench/*.cc' 'bench/*.h')
if [ ${#files[@]} -eq 0 ]; then echo "no sources found"; exit 1; fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f"
    bad=1
  fi
done
exit $bad
