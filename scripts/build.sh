#!/usr/bin/env bash
# Configures and builds attnserve.
#   scripts/build.sh [--target TARGET] [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/ (Release); TARGET to everything.
# With ATTNSERVE_CCACHE_DIR set (and ccache installed), compiles through
# ccache with its cache there; paths below the source tree are hashed
# relative to it, so that every checkout of the project shares one cache.
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
launcher=()
if [ -n "${ATTNSERVE_CCACHE_DIR:-}" ] && command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR=$ATTNSERVE_CCACHE_DIR CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true
  # Precompiled headers, and generated headers newer than the compilation.
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    "${launcher[@]}" "$@"
else
  cmake -S "$root" -B "$build_dir" "${launcher[@]}" "$@" >/dev/null
fi
t0=$(date +%s)
cmake --build "$build_dir" -j "$jobs" "${target[@]}"
echo "build.sh: built $(basename "$build_dir") in $(( $(date +%s) - t0 )) s"
