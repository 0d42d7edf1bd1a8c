"""attnserve.Client: one method per RPC of attnserve.v1.AttentionService, numpy / torch in and out.

    client = attnserve.connect("127.0.0.1:50051")
    out = client.flash_attention_score(q, k, v, head_num=8, input_layout="BNSD",
                                       scale_value=0.125).attention_out

A target may be one address, a list of addresses or a `dns:///name:port`; calls are spread over
the addresses by gRPC's round_robin policy, and servers that report NOT_SERVING on the standard
health service (a draining server) leave the rotation. UNAVAILABLE and RESOURCE_EXHAUSTED are
retried with backoff by gRPC's retry policy, with a retry buffer as large as the message limit
(gRPC's default of 256 KiB would silently exclude every tensor-sized request from retries).
"""

import collections
import ipaddress
import itertools
import json
import os
import queue
import socket
import threading
import time
import weakref
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Union

import grpc
import numpy as np

from attnserve import _split
from attnserve import _wire
from attnserve import errors
from attnserve import _rpc_protos
from attnserve.results import (ExecutionStats, FlashAttentionScoreGradResult,
                               FlashAttentionScoreResult, NsaSelectedAttentionGradResult,
                               NsaSelectedAttentionResult, TensorSpec, Totals, WorkspaceSize)
from attnserve.v1 import attention_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"
SERVICE = "attnserve.v1.AttentionService"
_INSTANCE_KEY = "x-attnserve-instance"
# PutTensor / GetTensor move tensors in chunks of this size.
_CHUNK_BYTES = 4 << 20


class _Rpc:
    def __init__(self, method, request, response, result, outputs):
        self.method = method
        self.path = f"/{SERVICE}/{method}"
        self.request = request
        self.response = response
        self.result = result
        self.outputs = outputs
        self.tensor_numbers = {name: number for number, name in
                               _wire.tensor_fields(request).items()}
        self.fields = request.DESCRIPTOR.fields_by_name


_FORWARD = _Rpc("FlashAttentionScore", pb.FlashAttentionScoreRequest,
                pb.FlashAttentionScoreResponse, FlashAttentionScoreResult,
                ("attention_out", "softmax_max", "softmax_sum"))
_GRAD = _Rpc("FlashAttentionScoreGrad", pb.FlashAttentionScoreGradRequest,
             pb.FlashAttentionScoreGradResponse, FlashAttentionScoreGradResult,
             ("dq", "dk", "dv", "dpse"))
_NSA = _Rpc("NsaSelectedAttention", pb.NsaSelectedAttentionRequest,
            pb.NsaSelectedAttentionResponse, NsaSelectedAttentionResult,
            ("attention_out", "softmax_max", "softmax_sum"))
_NSA_GRAD = _Rpc("NsaSelectedAttentionGrad", pb.NsaSelectedAttentionGradRequest,
                 pb.NsaSelectedAttentionGradResponse, NsaSelectedAttentionGradResult,
                 ("dq", "dk", "dv"))
_BY_OPERATOR = {"flash_attention_score": _FORWARD, "flash_attention_score_grad": _GRAD,
                "nsa_selected_attention": _NSA, "nsa_selected_attention_grad": _NSA_GRAD}


def service_config() -> str:
    """The gRPC service config of attnserve channels (JSON)."""
    retry = {
        "maxAttempts": 5,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
    }
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        # A server whose health service says NOT_SERVING (draining) leaves the rotation.
        "healthCheckConfig": {"serviceName": SERVICE},
        "methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": retry}],
    }
    return json.dumps(config)


class ResidentTensor:
    """A tensor kept on a server, named by its handle (PutTensor, or TensorRetention.keep).

    Pass it wherever a tensor is expected: the request carries the handle instead of the data,
    and goes to the server that holds it. A handle belongs to one server instance and dies with
    it (NOT_FOUND afterwards).
    """

    def __init__(self, handle: str, dtype: int = 0, shape: Sequence[int] = (),
                 nbytes: int = 0, expires_in_seconds: float = 0.0, server: str = "",
                 client: "Optional[Client]" = None):
        self._attnserve_handle = handle
        self.dtype = dtype
        self.shape = tuple(shape)
        self.nbytes = nbytes
        self.expires_in_seconds = expires_in_seconds
        # The address of the server holding it ("" = the client's only server).
        self.server = server
        self._client = client

    @property
    def handle(self) -> str:
        return self._attnserve_handle

    def fetch(self, *, as_torch: bool = False, timeout: Optional[float] = None):
        return self._client.get_tensor(self, as_torch=as_torch, timeout=timeout)

    def delete(self, *, timeout: Optional[float] = None) -> None:
        self._client.delete_tensor(self, timeout=timeout)

    def __repr__(self):
        dtype = _wire.datatype_name(self.dtype) if self.dtype else "?"
        return (f"ResidentTensor({self.handle!r}, {dtype}, {list(self.shape)}, "
                f"server={self.server!r})")


def _split_host_port(address: str):
    """(host, port) of "host:port" / "[v6]:port"; port "" when absent."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.lstrip(":")
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, port
    return address, ""


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _address(ip, port: str) -> str:
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def _resolve(host: str, port: str) -> List[str]:
    ip = _ip(host)
    if ip is not None:
        return [_address(ip, port)]
    found = []
    for info in socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM):
        address = _address(ipaddress.ip_address(info[4][0]), port)
        if address not in found:
            found.append(address)
    return found


class _Targets:
    """What a connect() target names: the gRPC target of the balanced channel, and the
    individual servers (addresses) behind it, for calls that must reach one server."""

    def __init__(self, target: Union[str, Sequence[str]]):
        self.given = [target] if isinstance(target, str) else list(target)
        if not self.given or not all(self.given):
            raise ValueError("attnserve.connect: empty target")
        self._host_port = None   # a name to resolve for the server list
        self._fixed: List[str] = []
        self.tls_name = ""
        if len(self.given) == 1:
            target = self.given[0]
            self.channel_target = target
            name = target
            if target.startswith("dns:"):
                name = target[4:].lstrip("/")
                if "/" in name:  # dns://authority/host:port
                    name = name.split("/", 1)[1]
            elif ":" in target.split("/")[0] and "://" not in target and \
                    not target.startswith(("ipv4:", "ipv6:", "unix:")):
                name = target
            else:
                name = ""
            host, port = _split_host_port(name) if name else ("", "")
            if host and port.isdigit():
                self.tls_name = host if _ip(host) is None else ""
                if _ip(host) is not None:
                    self._fixed = [_address(_ip(host), port)]
                else:
                    self._host_port = (host, port)
        else:
            addresses = []
            for entry in self.given:
                host, port = _split_host_port(entry)
                if not port.isdigit():
                    raise ValueError(f"attnserve.connect: {entry!r} is not host:port")
                if _ip(host) is None:
                    self.tls_name = self.tls_name or host
                addresses.extend(a for a in _resolve(host, port) if a not in addresses)
            if any(a.startswith("[") for a in addresses) and \
                    not all(a.startswith("[") for a in addresses):
                # One gRPC target lists one address family (e.g. a name resolving to both).
                addresses = [a for a in addresses if not a.startswith("[")]
            scheme = "ipv6:" if addresses[0].startswith("[") else "ipv4:"
            self.channel_target = scheme + ",".join(addresses)
            self._fixed = addresses
        self._resolved: List[str] = []
        self._resolved_at = 0.0

    @property
    def single(self) -> bool:
        """True when the balanced channel can only reach one server."""
        return len(self._fixed) == 1 or (not self._fixed and self._host_port is None)

    def servers(self) -> List[str]:
        """The individual server addresses ([] when the target cannot be enumerated)."""
        if self._fixed:
            return list(self._fixed)
        if self._host_port is None:
            return []
        now = time.monotonic()
        if not self._resolved or now - self._resolved_at > 30:
            try:
                self._resolved = _resolve(*self._host_port)
                self._resolved_at = now
            except OSError:
                pass
        return list(self._resolved)


class Client:
    """A connection to one attnserve server or a pool of them. Thread-safe; make one per
    process (attnserve.connect) and share it."""

    def __init__(self, target: Union[str, Sequence[str]] = DEFAULT_TARGET, *,
                 token: Optional[str] = None, credentials: Optional[grpc.ChannelCredentials] = None,
                 server_name: Optional[str] = None, timeout: Optional[float] = None,
                 max_message_bytes: Optional[int] = None, split: Union[bool, int] = False,
                 split_min_flops: float = 1e9, resident: bool = True):
        self._targets = _Targets(target)
        self._credentials = credentials
        self._server_name = server_name
        self.timeout = timeout
        self.max_message_bytes = int(max_message_bytes or (1 << 30) + (1 << 20))
        if self.max_message_bytes > (1 << 31) - 1:
            self.max_message_bytes = (1 << 31) - 1
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if split is True:
            split = max(2, len(self._targets.servers()))
        self.split_parts = int(split or 0)
        self.split_min_flops = split_min_flops
        self.resident = resident
        # Until when autograd forwards do not ask for handles (set after a server kept none).
        self.no_handles_until = 0.0
        # Reentrant: autograd's __del__ frees handles (delete_tensors_async, which takes the
        # lock) whenever the garbage collector runs, which may be inside a locked section of
        # the same thread; a plain Lock would deadlock there.
        self._lock = threading.RLock()
        self._totals = Totals()
        self._channel = self._make_channel(self._targets.channel_target)
        self._server_channels: Dict[str, grpc.Channel] = {}
        self._callables: Dict[tuple, object] = {}
        self._turn = itertools.count()
        # Servers that answered UNAVAILABLE to a pinned call: address -> until when to avoid.
        self._avoid: Dict[str, float] = {}
        # Calls made without waiting (DeleteTensor when autograd frees a graph).
        self._pending: set = set()
        self.async_delete_codes: Deque[grpc.StatusCode] = collections.deque(maxlen=64)
        # Handles to free (release_later), freed by a thread of their own.
        self._releases: "queue.SimpleQueue" = queue.SimpleQueue()
        threading.Thread(target=_release_loop, args=(self._releases, weakref.ref(self)),
                         name="attnserve-release", daemon=True).start()

    # --- channels ------------------------------------------------------------------------

    def _options(self, tls_name: str = "") -> List[tuple]:
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.per_rpc_retry_buffer_size", self.max_message_bytes),
            ("grpc.retry_buffer_size", self.max_message_bytes),
            ("grpc.service_config", service_config()),
        ]
        name = self._server_name or tls_name
        if name and self._credentials is not None:
            options.append(("grpc.ssl_target_name_override", name))
        return options

    def _make_channel(self, target: str, tls_name: str = "") -> grpc.Channel:
        options = self._options(tls_name)
        if self._credentials is not None:
            return grpc.secure_channel(target, self._credentials, options=options)
        return grpc.insecure_channel(target, options=options)

    def _channel_for(self, server: str) -> grpc.Channel:
        """The channel to one server address ("" = the balanced channel)."""
        if not server or self._targets.single:
            return self._channel
        with self._lock:
            channel = self._server_channels.get(server)
            if channel is None:
                channel = self._make_channel(server, self._targets.tls_name)
                self._server_channels[server] = channel
            return channel

    def pick_server(self) -> str:
        """One server of the pool for calls that must come back to the same server (resident
        tensors): the next in turn, skipping servers that recently answered UNAVAILABLE. ""
        when the client has only one server (or cannot enumerate them)."""
        if self._targets.single:
            return ""
        servers = self._targets.servers()
        if not servers:
            return ""
        now = time.monotonic()
        for _ in range(len(servers)):
            server = servers[next(self._turn) % len(servers)]
            if self._avoid.get(server, 0.0) <= now:
                return server
        return servers[next(self._turn) % len(servers)]

    def _mark_unavailable(self, server: str) -> None:
        if server:
            self._avoid[server] = time.monotonic() + 10.0

    def _callable(self, channel: grpc.Channel, kind: str, path: str):
        key = (id(channel), kind, path)
        found = self._callables.get(key)
        if found is None:
            factory = {"uu": channel.unary_unary, "su": channel.stream_unary,
                       "us": channel.unary_stream}[kind]
            found = factory(path)
            self._callables[key] = found
        return found

    def close(self) -> None:
        self._releases.put(None)
        with self._lock:
            channels = [self._channel] + list(self._server_channels.values())
            self._server_channels.clear()
        for channel in channels:
            channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def targets(self) -> List[str]:
        """The target(s) given to connect()."""
        return list(self._targets.given)

    @property
    def servers(self) -> List[str]:
        """The individual server addresses behind the target (resolved; [] if unknown)."""
        return self._targets.servers()

    # --- totals --------------------------------------------------------------------------

    def totals(self) -> Totals:
        """A snapshot of what this client sent, received and waited for (see Totals)."""
        with self._lock:
            return Totals(**vars(self._totals))

    def reset_totals(self) -> None:
        with self._lock:
            self._totals = Totals()

    def _count(self, sent: int, received: int, wall: float, stats: ExecutionStats,
               calls: int = 1) -> None:
        with self._lock:
            t = self._totals
            t.calls += calls
            t.bytes_sent += sent
            t.bytes_received += received
            t.wall_seconds += wall
            t.compute_seconds += stats.compute_seconds
            t.queue_seconds += stats.queue_seconds

    # --- calls ---------------------------------------------------------------------------

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else timeout

    def _unary(self, rpc_path: str, request: bytes, timeout, server: str = "", method=""):
        """(response bytes, trailing metadata) of a unary call to the pool, or to one server
        when `server` is given; AttnServeError on failure."""
        multi = self._callable(self._channel_for(server), "uu", rpc_path)
        try:
            response, call = multi.with_call(request, timeout=self._timeout(timeout),
                                             metadata=self._metadata)
        except grpc.RpcError as error:
            failure = errors.from_rpc_error(error, method, server)
            if isinstance(failure, errors.UnavailableError):
                self._mark_unavailable(server)
            raise failure from None
        return response, call.trailing_metadata()

    def _encode(self, rpc: _Rpc, tensors: Dict[str, _wire.WireTensor], scalars: dict) -> list:
        request = rpc.request()
        for name, value in scalars.items():
            if value is None:
                continue
            field = rpc.fields[name]
            if field.label == field.LABEL_REPEATED:
                getattr(request, name).extend(int(x) for x in value)
            elif field.message_type is not None:
                getattr(request, name).CopyFrom(value)
            elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
                setattr(request, name, float(value))
            elif field.type == field.TYPE_STRING:
                setattr(request, name, str(value))
            elif field.type == field.TYPE_BOOL:
                setattr(request, name, bool(value))
            else:
                setattr(request, name, int(value))
        parts = [request.SerializeToString()]
        for name, tensor in tensors.items():
            parts += _wire.tensor_field_parts(rpc.tensor_numbers[name], tensor)
        return parts

    def _split_args(self, rpc: _Rpc, args: dict):
        """(tensor inputs as WireTensors, scalar fields, whether any input was a torch tensor,
        the server holding resident inputs)."""
        tensors, scalars, any_torch, server = {}, {}, False, ""
        for name, value in args.items():
            if name in rpc.tensor_numbers:
                if value is None:
                    continue
                any_torch = any_torch or _wire.is_torch(value)
                tensors[name] = _wire.to_wire(value, name)
                if isinstance(value, ResidentTensor):
                    server = server or value.server
            elif value is not None:
                if name not in rpc.fields:
                    raise TypeError(f"attnserve: {rpc.method} has no field {name!r}")
                scalars[name] = value
        return tensors, scalars, any_torch, server

    def _compute(self, rpc: _Rpc, args: dict, timeout, split, as_torch):
        start = time.perf_counter()
        tensors, scalars, any_torch, server = self._split_args(rpc, args)
        if as_torch is None:
            as_torch = any_torch
        parts = self._split_plan(rpc, tensors, scalars, split)
        if parts is not None:
            return self._compute_split(rpc, tensors, scalars, parts, timeout, as_torch, start)
        retention = scalars.get("retention")
        if not server and retention is not None and (retention.keep or
                                                     retention.outputs_by_handle):
            # What is kept must be found again: the call goes to one server, not the pool.
            server = self.pick_server()
        request = b"".join(self._encode(rpc, tensors, scalars))
        response, trailing = self._unary(rpc.path, request, timeout, server, rpc.method)
        message, outputs = _wire.parse_response(rpc.response, response)
        result = self._result(rpc, message, outputs, as_torch, server)
        result.server = server
        result.instance = errors._metadata_value(trailing, _INSTANCE_KEY) or ""
        self._count(len(request), len(response), time.perf_counter() - start, result.stats)
        return result

    def _result(self, rpc: _Rpc, message, outputs: Dict[str, _wire.WireTensor], as_torch,
                server: str = ""):
        result = rpc.result(stats=ExecutionStats.from_proto(message.stats),
                            handles=dict(message.handles))
        for name in rpc.outputs:
            tensor = outputs.get(name)
            if tensor is not None and tensor.array is not None:
                setattr(result, name, _wire.from_wire(tensor, as_torch))
            elif tensor is not None:
                setattr(result, name, ResidentTensor(tensor.handle, tensor.dtype, tensor.shape,
                                                     server=server, client=self))
        return result

    # --- splitting -----------------------------------------------------------------------

    def _split_plan(self, rpc: _Rpc, tensors, scalars, split):
        parts = self.split_parts if split is None else int(split or 0)
        if parts < 2 or rpc not in (_FORWARD, _GRAD):
            return None
        if scalars.get("keep_prob", 1.0) < 1.0 or scalars.get("seed") is not None:
            return None
        if any(name not in tensors for name in ("query", "key", "value")):
            return None
        g = _split.geometry(str(scalars.get("input_layout", "")), int(scalars.get("head_num", 0)),
                            tensors["query"], tensors["key"], tensors["value"])
        if g is None or self._flops(g, tensors, scalars, rpc is _GRAD) < self.split_min_flops:
            return None
        plan = _split.plan(g, parts, tensors, rpc is _GRAD)
        return (g, plan) if len(plan) > 1 else None

    @staticmethod
    def _flops(g, tensors, scalars, grad: bool) -> float:
        q, k = tensors["query"].shape, tensors["key"].shape
        if g.layout == "TND":
            qlen = [0] + list(scalars.get("actual_seq_qlen") or [q[0]])
            kvlen = [0] + list(scalars.get("actual_seq_kvlen") or [k[0]])
            pairs = sum((qlen[i + 1] - qlen[i]) * (kvlen[i + 1] - kvlen[i])
                        for i in range(min(len(qlen), len(kvlen)) - 1))
        else:
            seq_axis = {"BSH": 1, "SBH": 0, "BSND": 1, "BNSD": 2}[g.layout]
            pairs = g.batch * q[seq_axis] * k[seq_axis]
        flops = 2.0 * g.heads * pairs * (g.dim + g.value_dim)
        return flops * 2.5 if grad else flops

    def _compute_split(self, rpc, tensors, scalars, plan, timeout, as_torch, start):
        g, parts = plan
        scalars = {k: v for k, v in scalars.items() if k != "retention"}
        requests, futures = [], []
        multi = self._callable(self._channel, "uu", rpc.path)
        for part in parts:
            part_tensors = {name: _split.slice_tensor(name, t, g, part)
                            for name, t in tensors.items()}
            request = b"".join(self._encode(rpc, part_tensors,
                                            _split.part_scalars(scalars, g, part)))
            requests.append(len(request))
            futures.append(multi.future(request, timeout=self._timeout(timeout),
                                        metadata=self._metadata))
        responses, failure = [], None
        for future in futures:
            try:
                responses.append(future.result())
            except grpc.RpcError as error:
                failure = failure or error
        if failure is not None:
            for future in futures:
                future.cancel()
            raise errors.from_rpc_error(failure, rpc.method) from None
        stats = ExecutionStats()
        pieces: Dict[str, list] = {}
        for response in responses:
            message, outputs = _wire.parse_response(rpc.response, response)
            stats = stats + ExecutionStats.from_proto(message.stats)
            for name, tensor in outputs.items():
                pieces.setdefault(name, []).append(tensor)
        result = rpc.result(stats=stats, parts=len(parts))
        for name, items in pieces.items():
            if name in rpc.outputs and len(items) == len(parts):
                whole = _split.assemble(name, items, g, parts, tensors)
                setattr(result, name, _wire.from_wire(whole, as_torch))
        self._count(sum(requests), sum(len(r) for r in responses), time.perf_counter() - start,
                    stats, calls=len(parts))
        return result

    # --- the RPCs ------------------------------------------------------------------------

    def flash_attention_score(
            self, query, key, value, *, head_num: int, input_layout: str, pse=None,
            drop_mask=None, padding_mask=None, atten_mask=None, prefix=None,
            actual_seq_qlen=None, actual_seq_kvlen=None, q_start_idx=None, kv_start_idx=None,
            scale_value: Optional[float] = None, keep_prob: Optional[float] = None,
            pre_tokens: Optional[int] = None, next_tokens: Optional[int] = None,
            inner_precise: int = 0, sparse_mode: int = 0, pse_type: Optional[int] = None,
            seed: Optional[int] = None, offset: Optional[int] = None,
            retention: Optional[pb.TensorRetention] = None, timeout: Optional[float] = None,
            split: Optional[int] = None, as_torch: Optional[bool] = None
    ) -> FlashAttentionScoreResult:
        """FlashAttentionScore (aclnnFlashAttentionScore / VarLenScore). Fields as in
        docs/api.md; tensors are numpy arrays, torch tensors, RawTensors or ResidentTensors.
        Outputs are torch tensors when any input was one (or as_torch), else numpy arrays.
        `split` overrides the client's split setting for this call."""
        args = dict(locals())
        for name in ("self", "timeout", "split", "as_torch"):
            del args[name]
        return self._compute(_FORWARD, args, timeout, split, as_torch)

    def flash_attention_score_grad(
            self, query, key, value, dy, *, head_num: int, input_layout: str, pse=None,
            drop_mask=None, padding_mask=None, atten_mask=None, softmax_max=None,
            softmax_sum=None, softmax_in=None, attention_in=None, prefix=None,
            actual_seq_qlen=None, actual_seq_kvlen=None, q_start_idx=None, kv_start_idx=None,
            scale_value: Optional[float] = None, keep_prob: Optional[float] = None,
            pre_tokens: Optional[int] = None, next_tokens: Optional[int] = None,
            inner_precise: int = 0, sparse_mode: int = 0, pse_type: Optional[int] = None,
            seed: Optional[int] = None, offset: Optional[int] = None,
            retention: Optional[pb.TensorRetention] = None, timeout: Optional[float] = None,
            split: Optional[int] = None, as_torch: Optional[bool] = None
    ) -> FlashAttentionScoreGradResult:
        """FlashAttentionScoreGrad: dq, dk, dv (dpse when pse is given)."""
        args = dict(locals())
        for name in ("self", "timeout", "split", "as_torch"):
            del args[name]
        return self._compute(_GRAD, args, timeout, split, as_torch)

    def nsa_selected_attention(
            self, query, key, value, topk_indices, *, actual_seq_qlen, actual_seq_kvlen,
            selected_block_size: int, selected_block_count: int, head_num: int,
            input_layout: str = "TND", atten_mask=None, scale_value: Optional[float] = None,
            sparse_mode: int = 0, retention: Optional[pb.TensorRetention] = None,
            timeout: Optional[float] = None, as_torch: Optional[bool] = None
    ) -> NsaSelectedAttentionResult:
        """NsaSelectedAttention: native sparse attention's selected blocks (TND)."""
        args = dict(locals())
        for name in ("self", "timeout", "as_torch"):
            del args[name]
        return self._compute(_NSA, args, timeout, 0, as_torch)

    def nsa_selected_attention_grad(
            self, query, key, value, attention_out, attention_out_grad, softmax_max,
            softmax_sum, topk_indices, *, actual_seq_qlen, actual_seq_kvlen,
            selected_block_size: int, selected_block_count: int, head_num: int,
            input_layout: str = "TND", atten_mask=None, scale_value: Optional[float] = None,
            sparse_mode: int = 0, retention: Optional[pb.TensorRetention] = None,
            timeout: Optional[float] = None, as_torch: Optional[bool] = None
    ) -> NsaSelectedAttentionGradResult:
        """NsaSelectedAttentionGrad: dq, dk, dv."""
        args = dict(locals())
        for name in ("self", "timeout", "as_torch"):
            del args[name]
        return self._compute(_NSA_GRAD, args, timeout, 0, as_torch)

    def get_workspace_size(self, operator: str, *, timeout: Optional[float] = None,
                           **fields) -> WorkspaceSize:
        """Validation and sizing without running: `operator` is "flash_attention_score",
        "flash_attention_score_grad", "nsa_selected_attention" or
        "nsa_selected_attention_grad"; `fields` as for that method. Field names in errors are
        nested, e.g. "flash_attention_score.head_num"."""
        rpc = _BY_OPERATOR.get(operator)
        if rpc is None:
            raise ValueError(f"attnserve: unknown operator {operator!r}; one of "
                             f"{sorted(_BY_OPERATOR)}")
        start = time.perf_counter()
        tensors, scalars, _, server = self._split_args(rpc, fields)
        number = pb.GetWorkspaceSizeRequest.DESCRIPTOR.fields_by_name[operator].number
        request = b"".join(_wire.message_field_parts(number, self._encode(rpc, tensors, scalars)))
        response, _ = self._unary(f"/{SERVICE}/GetWorkspaceSize", request, timeout, server,
                                  "GetWorkspaceSize")
        message = pb.GetWorkspaceSizeResponse.FromString(response)
        self._count(len(request), len(response), time.perf_counter() - start, ExecutionStats())
        return WorkspaceSize(message.workspace_bytes, message.flops,
                             [TensorSpec(o.name, pb.DataType.Name(o.dtype), tuple(o.shape))
                              for o in message.outputs])

    def get_server_info(self, *, timeout: Optional[float] = None) -> pb.GetServerInfoResponse:
        response, _ = self._unary(f"/{SERVICE}/GetServerInfo", b"", timeout,
                                  method="GetServerInfo")
        return pb.GetServerInfoResponse.FromString(response)

    def health(self, service: str = "", *, timeout: Optional[float] = None) -> str:
        """grpc.health.v1.Health/Check: "SERVING", "NOT_SERVING", ... ("" = whole server)."""
        request = _rpc_protos.HealthCheckRequest(service=service).SerializeToString()
        response, _ = self._unary("/grpc.health.v1.Health/Check", request, timeout,
                                  method="Health/Check")
        status = _rpc_protos.HealthCheckResponse.FromString(response).status
        return _rpc_protos.HealthCheckResponse.ServingStatus.Name(status)

    # --- resident tensors ----------------------------------------------------------------

    def put_tensor(self, tensor, *, ttl_seconds: Optional[int] = None,
                   timeout: Optional[float] = None) -> ResidentTensor:
        """Uploads a tensor to one server (PutTensor, streamed in 4 MiB chunks, so it may
        exceed the message limit) and returns its ResidentTensor."""
        start = time.perf_counter()
        wire = _wire.to_wire(tensor)
        data = memoryview(wire.array.reshape(-1).view(np.uint8))
        first = pb.PutTensorRequest(tensor=pb.Tensor(dtype=wire.dtype, shape=wire.shape))
        if ttl_seconds is not None:
            first.ttl_seconds = int(ttl_seconds)
        chunk_tag = _wire.varint(3 << 3 | 2)
        sent = [0]

        def messages():
            head = first.SerializeToString()
            pos = 0
            while True:
                chunk = data[pos:pos + _CHUNK_BYTES]
                message = b"".join([head, chunk_tag, _wire.varint(len(chunk)), chunk]) \
                    if len(chunk) else head
                sent[0] += len(message)
                yield message
                head = b""
                pos += len(chunk)
                if pos >= len(data):
                    return

        server = self.pick_server()
        multi = self._callable(self._channel_for(server), "su", f"/{SERVICE}/PutTensor")
        try:
            response, _ = multi.with_call(messages(), timeout=self._timeout(timeout),
                                          metadata=self._metadata)
        except grpc.RpcError as error:
            failure = errors.from_rpc_error(error, "PutTensor", server)
            if isinstance(failure, errors.UnavailableError):
                self._mark_unavailable(server)
            raise failure from None
        message = pb.PutTensorResponse.FromString(response)
        self._count(sent[0], len(response), time.perf_counter() - start, ExecutionStats())
        return ResidentTensor(message.handle, wire.dtype, wire.shape, message.bytes,
                              message.expires_in_seconds, server, self)

    def get_tensor(self, handle: Union[str, ResidentTensor], *, as_torch: bool = False,
                   timeout: Optional[float] = None):
        """Downloads a resident tensor (GetTensor)."""
        start = time.perf_counter()
        name = handle.handle if isinstance(handle, ResidentTensor) else str(handle)
        server = handle.server if isinstance(handle, ResidentTensor) else ""
        multi = self._callable(self._channel_for(server), "us", f"/{SERVICE}/GetTensor")
        request = pb.GetTensorRequest(handle=name).SerializeToString()
        received = 0
        header, buffer, filled = None, None, 0
        try:
            for raw in multi(request, timeout=self._timeout(timeout), metadata=self._metadata):
                received += len(raw)
                message = pb.GetTensorResponse.FromString(raw)
                if header is None:
                    header = message.tensor
                    count = int(np.prod(tuple(header.shape), dtype=np.int64))
                    buffer = np.empty(count * _wire._CARRIER[header.dtype].itemsize, np.uint8)
                chunk = message.chunk
                buffer[filled:filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
                filled += len(chunk)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, "GetTensor", server) from None
        if header is None or filled != len(buffer):
            expected = 0 if buffer is None else len(buffer)
            raise errors.AttnServeError(f"GetTensor returned {filled} bytes, expected {expected}",
                                        method="GetTensor")
        self._count(len(request), received, time.perf_counter() - start, ExecutionStats())
        array = buffer.view(_wire._CARRIER[header.dtype]).reshape(tuple(header.shape))
        return _wire.from_wire(_wire.WireTensor(header.dtype, tuple(header.shape), array),
                               as_torch)

    def delete_tensor(self, handle: Union[str, ResidentTensor], *,
                      timeout: Optional[float] = None) -> None:
        """Frees a resident tensor (DeleteTensor); an unknown handle is not an error."""
        name = handle.handle if isinstance(handle, ResidentTensor) else str(handle)
        server = handle.server if isinstance(handle, ResidentTensor) else ""
        request = pb.DeleteTensorRequest(handle=name).SerializeToString()
        self._unary(f"/{SERVICE}/DeleteTensor", request, timeout, server, "DeleteTensor")

    def delete_tensors_async(self, handles: Iterable[str], server: str = "") -> None:
        """Frees handles without waiting (errors ignored): used when autograd drops a graph.
        The calls are held until they finish (gRPC cancels a call whose future is collected);
        their status codes are kept in `async_delete_codes` (the last 64)."""
        try:
            multi = self._callable(self._channel_for(server), "uu", f"/{SERVICE}/DeleteTensor")
            for name in set(handles):
                future = multi.future(pb.DeleteTensorRequest(handle=name).SerializeToString(),
                                      timeout=30, metadata=self._metadata)
                with self._lock:
                    self._pending.add(future)
                future.add_done_callback(self._async_done)
        except Exception:  # noqa: BLE001 - best effort; the server's TTL frees them anyway
            pass

    def release_later(self, handles: Iterable[str], server: str = "") -> None:
        """Frees handles soon, from the client's own release thread (delete_tensors_async
        there). Safe to call from __del__ and from the garbage collector, which may run in the
        middle of a gRPC call on the calling thread, where a new call could deadlock inside
        gRPC."""
        self._releases.put((list(handles), server))

    def _async_done(self, future) -> None:
        with self._lock:
            self._pending.discard(future)
            self.async_delete_codes.append(future.code())


def _release_loop(releases: "queue.SimpleQueue", client_ref) -> None:
    """The release thread of a client: frees what release_later queued, until the client is
    closed or collected."""
    while True:
        item = releases.get()
        client = client_ref()
        if item is None or client is None:
            return
        handles, server = item
        client.delete_tensors_async(handles, server)
        del client


def _read(value) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and "-----BEGIN" in value:
        return value.encode()
    with open(value, "rb") as f:
        return f.read()


def connect(target: Union[str, Sequence[str]], *, token: Optional[str] = None,
            root_certificates=None, private_key=None, certificate_chain=None,
            timeout: Optional[float] = None, max_message_bytes: Optional[int] = None,
            tls: Optional[bool] = None, server_name: Optional[str] = None,
            split: Union[bool, int] = False, split_min_flops: float = 1e9,
            resident: bool = True) -> Client:
    """A Client for `target`: "host:port", a list of them, or "dns:///name:port".

    token: sent as `authorization: Bearer <token>` with every call.
    root_certificates / private_key / certificate_chain: PEM bytes (or a PEM string or a file
        path); any of them turns TLS on (tls=True uses TLS with the system's roots).
    server_name: the name the server certificate is checked against, when it differs from
        the target's host.
    timeout: seconds of every call made without its own (None = no deadline).
    max_message_bytes: largest request or response (default 1 GiB + 1 MiB; at most 2 GiB).
    split: spread large FlashAttentionScore(Grad) calls over this many concurrent calls
        (True = one per target); results are bit-identical. Calls below split_min_flops stay
        whole.
    resident: let autograd keep forward tensors on the server so the backward sends only dy
        (used when the server supports resident tensors).
    """
    roots, key, chain = _read(root_certificates), _read(private_key), _read(certificate_chain)
    if (key is None) != (chain is None):
        raise ValueError("attnserve.connect: private_key and certificate_chain go together")
    if tls is None:
        tls = any(v is not None for v in (roots, key, chain))
    credentials = grpc.ssl_channel_credentials(roots, key, chain) if tls else None
    return Client(target, token=token, credentials=credentials, server_name=server_name,
                  timeout=timeout, max_message_bytes=max_message_bytes, split=split,
                  split_min_flops=split_min_flops, resident=resident)


_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def set_default_client(client: Optional[Client]) -> None:
    """The client used by attnserve.npu and attnserve.functional calls made without one."""
    global _default_client
    with _default_lock:
        _default_client = client


def default_client() -> Client:
    """The default client; made on first use from $ATTNSERVE_TARGET (a comma-separated list
    makes a pool; default 127.0.0.1:50051) and $ATTNSERVE_TOKEN."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            target = os.environ.get("ATTNSERVE_TARGET", DEFAULT_TARGET)
            targets = [t.strip() for t in target.split(",") if t.strip()]
            _default_client = connect(targets if len(targets) > 1 else targets[0],
                                      token=os.environ.get("ATTNSERVE_TOKEN") or None)
        return _default_client
