"""What attnserve calls return besides tensors: execution figures, results, client totals."""

import dataclasses
from typing import Any, Dict, List, Tuple


@dataclasses.dataclass
class ExecutionStats:
    """The server's figures for one call (summed over the parts of a split call)."""

    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    workspace_bytes: int = 0
    flops: float = 0.0

    @classmethod
    def from_proto(cls, stats) -> "ExecutionStats":
        return cls(stats.queue_seconds, stats.compute_seconds, stats.workspace_bytes, stats.flops)

    def __add__(self, other: "ExecutionStats") -> "ExecutionStats":
        return ExecutionStats(self.queue_seconds + other.queue_seconds,
                              self.compute_seconds + other.compute_seconds,
                              self.workspace_bytes + other.workspace_bytes,
                              self.flops + other.flops)


@dataclasses.dataclass
class _CallInfo:
    stats: ExecutionStats = dataclasses.field(default_factory=ExecutionStats)
    # Field name -> handle of a tensor kept on the server (TensorRetention.keep).
    handles: Dict[str, str] = dataclasses.field(default_factory=dict)
    # The server address the call was pinned to (resident tensors), "" when it went to the
    # pool (or the client has one server).
    server: str = ""
    # The server's x-attnserve-instance trailing metadata, when it sends one.
    instance: str = ""
    # Number of concurrent calls this result was assembled from (1 = not split).
    parts: int = 1


@dataclasses.dataclass
class FlashAttentionScoreResult(_CallInfo):
    attention_out: Any = None
    softmax_max: Any = None
    softmax_sum: Any = None


@dataclasses.dataclass
class FlashAttentionScoreGradResult(_CallInfo):
    dq: Any = None
    dk: Any = None
    dv: Any = None
    dpse: Any = None


@dataclasses.dataclass
class NsaSelectedAttentionResult(_CallInfo):
    attention_out: Any = None
    softmax_max: Any = None
    softmax_sum: Any = None


@dataclasses.dataclass
class NsaSelectedAttentionGradResult(_CallInfo):
    dq: Any = None
    dk: Any = None
    dv: Any = None


@dataclasses.dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: Tuple[int, ...]


@dataclasses.dataclass
class WorkspaceSize:
    workspace_bytes: int
    flops: float
    outputs: List[TensorSpec]


@dataclasses.dataclass
class Totals:
    """What a Client has sent and received since it was made (or reset_totals()).

    `wall_seconds` is the time callers spent inside attnserve calls (encoding, the round trip,
    decoding); `compute_seconds` and `queue_seconds` add up the servers' ExecutionStats. For
    split calls compute_seconds can exceed wall_seconds (the parts run concurrently).
    """

    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    queue_seconds: float = 0.0

    def __sub__(self, other: "Totals") -> "Totals":
        return Totals(*(a - b for a, b in zip(dataclasses.astuple(self),
                                               dataclasses.astuple(other))))
