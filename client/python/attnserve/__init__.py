"""attnserve: the Python client of the attnserve attention service.

    import attnserve
    client = attnserve.connect("127.0.0.1:50051")          # or a list / "dns:///pool:50051"
    result = client.flash_attention_score(q, k, v, head_num=8, input_layout="BNSD")

    from attnserve.npu import npu_fusion_attention          # torch_npu's call, differentiable
    from attnserve.functional import scaled_dot_product_attention

See docs/python.md.
"""

import importlib

from attnserve._wire import DataType, RawTensor
from attnserve.client import (Client, ResidentTensor, connect, default_client,
                              set_default_client)
from attnserve.memory import tune_malloc
from attnserve.errors import (AttnServeError, CancelledError, DeadlineExceededError,
                              FailedPreconditionError, InternalError, InvalidArgumentError,
                              NotFoundError, PermissionDeniedError, ResourceExhaustedError,
                              UnauthenticatedError, UnavailableError, UnimplementedError)
from attnserve.results import (ExecutionStats, FlashAttentionScoreGradResult,
                               FlashAttentionScoreResult, NsaSelectedAttentionGradResult,
                               NsaSelectedAttentionResult, TensorSpec, Totals, WorkspaceSize)
from attnserve.v1.attention_pb2 import TensorRetention

__version__ = "0.1.0"

__all__ = [
    "AttnServeError", "CancelledError", "Client", "DataType", "DeadlineExceededError",
    "ExecutionStats", "FailedPreconditionError", "FlashAttentionScoreGradResult",
    "FlashAttentionScoreResult", "InternalError", "InvalidArgumentError", "NotFoundError",
    "NsaSelectedAttentionGradResult", "NsaSelectedAttentionResult", "PermissionDeniedError",
    "RawTensor", "ResidentTensor", "ResourceExhaustedError", "TensorRetention", "TensorSpec",
    "Totals", "UnauthenticatedError", "UnavailableError", "UnimplementedError",
    "WorkspaceSize", "connect", "default_client", "functional", "npu", "set_default_client",
    "tune_malloc",
]


def __getattr__(name):
    # attnserve.npu and attnserve.functional import torch: load them on first use.
    if name in ("npu", "functional"):
        return importlib.import_module(f"attnserve.{name}")
    raise AttributeError(f"module 'attnserve' has no attribute {name!r}")
