#!/usr/bin/env bash
# Installs everything attnserve needs to build, run and test, from Debian's
# packages (and buf, the protobuf linter / gRPC curl, from npm into .tools/).
# Idempotent and quiet when everything is already there. Needs root (or sudo).
#   scripts/install-deps.sh [--ci] [--clang]
#   --ci     also what continuous integration uses (.ci/run): ccache.
#   --clang  also clang with its sanitizer and libFuzzer runtimes, for
#            scripts/fuzz.sh and scripts/test.sh --thread-sanitize (not
#            needed to build, run or test otherwise).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libopenblas-dev libdnnl-dev libspdlog-dev libgtest-dev libgmock-dev
  # oneDNN's CMake package looks for OpenCL; libdnnl-dev only recommends it,
  # and recommendations are not installed (--no-install-recommends).
  ocl-icd-opencl-dev
  golang-github-gogo-googleapis-dev
  prometheus-cpp-dev libssl-dev
  clang-format
  # Tests: openssl makes the TLS certificates, nginx is the gRPC load
  # balancer of the load-balancer test.
  openssl nginx
  # The Python client (client/python) and its pytest suite: Debian's python3
  # with gRPC, protobuf, numpy and PyTorch; pip, venv, setuptools and wheel for
  # `pip install --no-build-isolation ./client/python`. Its stubs are made by
  # protoc and grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc).
  python3 python3-grpcio python3-protobuf python3-numpy python3-torch python3-pytest
  python3-pip python3-venv python3-setuptools python3-wheel
)

for option in "$@"; do
  case $option in
    --ci) packages+=(ccache) ;;
    --clang) packages+=(clang libclang-rt-dev) ;;
    *) echo "install-deps: unknown option $option" >&2; exit 2 ;;
  esac
done

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  t0=$(date +%s)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: installed ${#missing[@]} packages and their dependencies in $(( $(date +%s) - t0 )) s"
fi

# buf: `buf lint` for the protos and `buf curl` for the end-to-end tests.
if [ ! -x "$root/.tools/node_modules/.bin/buf" ]; then
  echo "install-deps: installing buf (npm @bufbuild/buf) into .tools/"
  mkdir -p "$root/.tools"
  npm install --silent --no-audit --no-fund --prefix "$root/.tools" \
    @bufbuild/buf@1 >/dev/null
fi
