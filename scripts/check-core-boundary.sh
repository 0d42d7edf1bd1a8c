#!/usr/bin/env bash
# The compute core knows nothing of gRPC or protobuf: fails if any file under
# core/ includes their headers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if grep -rnE '#include [<"](grpc|grpcpp/|google/protobuf/|.*\.pb\.h)' "$root/core"; then
  echo "core/ must not depend on gRPC or protobuf"
  exit 1
fi
echo "core/ is free of gRPC and protobuf"
