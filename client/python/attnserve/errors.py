"""Errors raised by attnserve calls: one AttnServeError subclass per gRPC status code.

    try:
        client.flash_attention_score(q, k, v, head_num=3, input_layout="BNSD")
    except attnserve.InvalidArgumentError as e:
        print(e.violations)   # [("head_num", "must equal the query's N (query.shape[1])=8, got 3")]
"""

from typing import List, Optional, Tuple

import grpc

from attnserve import _rpc_protos

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class AttnServeError(Exception):
    """A failed attnserve call.

    Attributes: `code` (grpc.StatusCode), `message` (the server's text: `<field>: <rule>` for
    INVALID_ARGUMENT), `method` (the RPC), `request_id` (the server's x-request-id, to find
    its log line), `server` (the server address, for calls pinned to one server of a pool).
    """

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: Optional[grpc.StatusCode] = None,
                 method: str = "", request_id: str = "", server: str = ""):
        self.message = message
        if code is not None:
            self.code = code
        self.method = method
        self.request_id = request_id
        self.server = server
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.method}: " if self.method else ""
        extra = f" (request id {self.request_id})" if self.request_id else ""
        return f"{where}{self.code.name}: {self.message}{extra}"


class InvalidArgumentError(AttnServeError, ValueError):
    """A broken constraint. `violations` lists (field, description) pairs from the
    google.rpc.BadRequest in the status details, e.g. ("key.shape[2]", "must be ...")."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Optional[List[Tuple[str, str]]] = None,
                 **kwargs):
        self.violations = list(violations or [])
        super().__init__(message, **kwargs)

    @property
    def fields(self) -> List[str]:
        return [field for field, _ in self.violations]


class NotFoundError(AttnServeError, LookupError):
    """A resident tensor's handle this server does not hold (unknown, expired, another
    caller's, or the server restarted)."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(AttnServeError):
    """Queue full, a message over the size limit, or a workspace over the memory budget."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(AttnServeError, ConnectionError):
    """No server reachable, or the server is draining for shutdown."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(AttnServeError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(AttnServeError):
    code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(AttnServeError, PermissionError):
    """Token auth is on and no (or an unknown) token was sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(AttnServeError, PermissionError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnimplementedError(AttnServeError, NotImplementedError):
    """The server does not implement this RPC (e.g. an older server without resident
    tensors)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(AttnServeError):
    code = grpc.StatusCode.INTERNAL


class FailedPreconditionError(AttnServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgumentError, NotFoundError, ResourceExhaustedError, UnavailableError,
    DeadlineExceededError, CancelledError, UnauthenticatedError, PermissionDeniedError,
    UnimplementedError, InternalError, FailedPreconditionError)}


def _metadata_value(metadata, key: str):
    for entry in metadata or ():
        if entry[0] == key:
            return entry[1]
    return None


def field_violations(trailing_metadata) -> List[Tuple[str, str]]:
    """(field, description) pairs of the google.rpc.BadRequest in grpc-status-details-bin."""
    details = _metadata_value(trailing_metadata, _STATUS_DETAILS_KEY)
    if not details:
        return []
    status = _rpc_protos.Status.FromString(details)
    violations = []
    for detail in status.details:
        bad_request = _rpc_protos.BadRequest()
        if detail.Is(bad_request.DESCRIPTOR) and detail.Unpack(bad_request):
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations


def from_rpc_error(error: grpc.RpcError, method: str = "", server: str = "") -> AttnServeError:
    """The AttnServeError subclass for a grpc.RpcError (which is also a grpc.Call)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    request_id = _metadata_value(trailing, "x-request-id") or ""
    cls = _BY_CODE.get(code, AttnServeError)
    kwargs = dict(method=method, request_id=request_id, server=server)
    if cls is InvalidArgumentError:
        return InvalidArgumentError(message or "", field_violations(trailing), **kwargs)
    if cls is AttnServeError:
        return AttnServeError(message or "", code=code, **kwargs)
    return cls(message or "", **kwargs)
