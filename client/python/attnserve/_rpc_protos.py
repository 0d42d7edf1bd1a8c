"""google.rpc.Status, google.rpc.BadRequest and grpc.health.v1 messages.

Built from the descriptors in _rpc_protos.binpb (see generate_protos.py) inside a private
descriptor pool: another copy of these well-known files in the process (googleapis-common-protos,
grpcio-health-checking) registers them in the default pool, and the two must not collide.
"""

import pathlib

from google.protobuf import any_pb2
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import duration_pb2
from google.protobuf import message_factory

_pool = descriptor_pool.DescriptorPool()
for _dependency in (any_pb2, duration_pb2):
    _pool.Add(descriptor_pb2.FileDescriptorProto.FromString(_dependency.DESCRIPTOR.serialized_pb))
_files = descriptor_pb2.FileDescriptorSet.FromString(
    (pathlib.Path(__file__).parent / "_rpc_protos.binpb").read_bytes())
for _file in _files.file:
    _pool.Add(_file)
_factory = message_factory.MessageFactory(_pool)


def _message(full_name):
    return _factory.GetPrototype(_pool.FindMessageTypeByName(full_name))


Status = _message("google.rpc.Status")
BadRequest = _message("google.rpc.BadRequest")
HealthCheckRequest = _message("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = _message("grpc.health.v1.HealthCheckResponse")
