"""Generated protobuf code of the wire contract attnserve.v1 (proto/attnserve/v1/attention.proto).

Regenerate with `python3 client/python/generate_protos.py`; do not edit the *_pb2*.py files.
"""
