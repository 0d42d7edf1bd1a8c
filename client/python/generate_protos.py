#!/usr/bin/env python3
"""Regenerates the protobuf code that the attnserve Python package ships.

    python3 client/python/generate_protos.py              # rewrites the files in the package
    python3 client/python/generate_protos.py --out DIR    # writes them under DIR instead

Writes, relative to the package root (client/python/):

    attnserve/v1/attention_pb2.py        messages of proto/attnserve/v1/attention.proto
    attnserve/v1/attention_pb2_grpc.py   its service stub (grpc_python_plugin)
    attnserve/_rpc_protos.binpb          descriptors of google/rpc/status.proto,
                                         google/rpc/error_details.proto and
                                         grpc/health/v1/health.proto

The last three are loaded into a private descriptor pool (attnserve/_rpc_protos.py), so that
they never clash with another copy of google.rpc (e.g. googleapis-common-protos) in the
same process. The test tests/test_generated_code.py fails when the files in the package
differ from what this script writes, i.e. when the .proto changed without regenerating.

Tools (Debian 12 packages): protoc (protobuf-compiler), grpc_python_plugin
(protobuf-compiler-grpc), the google/rpc protos (golang-github-gogo-googleapis-dev).
Override their locations with $PROTOC, $GRPC_PYTHON_PLUGIN and $GOOGLEAPIS_DIR.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
ATTENTION_PROTO_ROOT = REPO / "proto"
HEALTH_PROTO_ROOT = REPO / "client" / "proto"
DEFAULT_GOOGLEAPIS = "/usr/share/gocode/src/github.com/gogo/googleapis"

OUTPUTS = (
    "attnserve/v1/attention_pb2.py",
    "attnserve/v1/attention_pb2_grpc.py",
    "attnserve/_rpc_protos.binpb",
)


def _tool(env_name, program):
    path = os.environ.get(env_name) or shutil.which(program) or f"/usr/bin/{program}"
    if not os.path.exists(path):
        sys.exit(f"generate_protos: {program} not found (install it with "
                 f"scripts/install-deps.sh or set ${env_name})")
    return path


def generate(out_dir):
    """Writes every file of OUTPUTS under out_dir."""
    out_dir = pathlib.Path(out_dir)
    protoc = _tool("PROTOC", "protoc")
    plugin = _tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin")
    googleapis = pathlib.Path(os.environ.get("GOOGLEAPIS_DIR", DEFAULT_GOOGLEAPIS))
    if not (googleapis / "google/rpc/status.proto").exists():
        sys.exit(f"generate_protos: {googleapis}/google/rpc/status.proto not found "
                 "(Debian package golang-github-gogo-googleapis-dev, or set $GOOGLEAPIS_DIR)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [protoc, f"--proto_path={ATTENTION_PROTO_ROOT}", f"--python_out={tmp}",
             f"--grpc_python_out={tmp}", f"--plugin=protoc-gen-grpc_python={plugin}",
             "attnserve/v1/attention.proto"],
            check=True)
        subprocess.run(
            [protoc, f"--proto_path={googleapis}", f"--proto_path={HEALTH_PROTO_ROOT}",
             f"--descriptor_set_out={tmp}/attnserve/_rpc_protos.binpb",
             "google/rpc/status.proto", "google/rpc/error_details.proto",
             "grpc/health/v1/health.proto"],
            check=True)
        for name in OUTPUTS:
            target = out_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pathlib.Path(tmp) / name, target)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE),
                        help="directory to write into (default: the package root)")
    args = parser.parse_args()
    generate(args.out)


if __name__ == "__main__":
    main()
