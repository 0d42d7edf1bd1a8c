#!/usr/bin/env bash
# Configures and builds attnserve.
#   scripts/build.sh [--target TARGET] [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/ (Release); TARGET to everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=()
if [ "${1:-}" = "--target" ]; then
  target=(--target "$2")
  shift 2
fi
build_dir=${1:-$root/build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
else
  cmake -S "$root" -B "$build_dir" "$@" >/dev/null
fi
cmake --build "$build_dir" -j "$jobs" "${target[@]}"
