#!/usr/bin/env bash
# Installs the dependencies, builds attnserve (Release) and starts the server
# in the foreground on 0.0.0.0:50051. Extra arguments go to the server, e.g.
#   scripts/serve.sh --listen=127.0.0.1:6000 --workers=4
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build" -DATTNSERVE_BUILD_TESTS=OFF
exec "$root/build/server/attnserve" "$@"
