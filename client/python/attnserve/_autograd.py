"""The torch.autograd.Function behind attnserve.npu and attnserve.functional.

Forward: one FlashAttentionScore call. When a gradient will be needed and the client allows
resident tensors, the call asks the server to keep its inputs and outputs
(TensorRetention.keep) and goes to one server of the pool; the backward then names them by
handle, so only dy travels. Backward: one FlashAttentionScoreGrad call with the forward's
residuals (softmax_max, softmax_sum, attention_in), by handle where the forward returned one and
by data otherwise; a NOT_FOUND / UNIMPLEMENTED / UNAVAILABLE answer to the call by handle (a
restarted server, an expired handle, a server without resident tensors) resends everything by
data. The handles are freed when autograd frees the graph. A forward whose pinned server is
unavailable goes to the pool without keeping anything; after a forward that asked for handles
got none, forwards do not ask for a minute.
"""

import dataclasses
import time
from typing import Dict, List, Optional

import torch

from attnserve import errors
from attnserve.client import Client, ResidentTensor
from attnserve.v1 import attention_pb2 as pb

# Forward request field -> the grad request field that takes the same tensor.
_RESIDUALS = {"query": "query", "key": "key", "value": "value", "pse": "pse",
              "atten_mask": "atten_mask", "attention_out": "attention_in",
              "softmax_max": "softmax_max", "softmax_sum": "softmax_sum"}
# After a forward that asked for handles got none, how long to send forwards without asking.
_NO_HANDLES_RETRY_SECONDS = 60.0
_RESEND_ON = (errors.NotFoundError, errors.UnimplementedError, errors.UnavailableError)


@dataclasses.dataclass
class Options:
    """The scalar fields shared by the forward and grad requests."""

    head_num: int
    input_layout: str
    scale_value: float = 1.0
    keep_prob: float = 1.0
    pre_tokens: int = 2147483647
    next_tokens: int = 2147483647
    inner_precise: int = 0
    sparse_mode: int = 0
    pse_type: Optional[int] = None
    seed: Optional[int] = None
    offset: Optional[int] = None
    prefix: Optional[List[int]] = None
    actual_seq_qlen: Optional[List[int]] = None
    actual_seq_kvlen: Optional[List[int]] = None
    q_start_idx: Optional[List[int]] = None
    kv_start_idx: Optional[List[int]] = None

    def fields(self) -> dict:
        return dataclasses.asdict(self)


class _Handles:
    """Handles a forward left on a server; freed (without waiting) when autograd drops the
    graph that holds them."""

    def __init__(self, client: Client, server: str, handles: Dict[str, str], shapes: dict):
        self.client = client
        self.server = server
        self.handles = handles
        self.shapes = shapes

    def resident(self, name: str) -> Optional[ResidentTensor]:
        handle = self.handles.get(name)
        if not handle:
            return None
        dtype, shape = self.shapes.get(name, (0, ()))
        return ResidentTensor(handle, dtype, shape, server=self.server, client=self.client)

    def __del__(self):
        # Queued, not called: the garbage collector may run this inside a gRPC call.
        if self.handles:
            self.client.release_later(self.handles.values(), self.server)
            self.handles = {}


def attention(client: Client, options: Options, query, key, value, pse=None, atten_mask=None):
    """FlashAttention.apply, telling the forward whether a backward can follow (grad mode is
    off inside forward, so this is read before)."""
    record = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, pse))
    return FlashAttention.apply(client, options, record, query, key, value, pse, atten_mask)


def _wire_dtype(t: torch.Tensor) -> int:
    from attnserve import _wire

    return _wire.datatype(t.dtype)


class FlashAttention(torch.autograd.Function):
    """outputs (attention_out, softmax_max, softmax_sum) = FlashAttentionScore(query, key,
    value, pse, atten_mask); differentiable in query, key, value and pse."""

    @staticmethod
    def forward(ctx, client: Client, options: Options, record: bool, query, key, value, pse,
                atten_mask):
        keep = record and client.resident and time.monotonic() >= client.no_handles_until
        result = None
        if keep:
            try:
                result = client.flash_attention_score(
                    query, key, value, pse=pse, atten_mask=atten_mask,
                    retention=pb.TensorRetention(keep=True), as_torch=True, **options.fields())
            except errors.UnavailableError:
                result = None  # the server it was pinned to is gone: use the pool
            else:
                if not result.handles and result.parts == 1:
                    # A server without resident tensors: stop asking (and pinning) for a while.
                    client.no_handles_until = time.monotonic() + _NO_HANDLES_RETRY_SECONDS
        if result is None:
            result = client.flash_attention_score(
                query, key, value, pse=pse, atten_mask=atten_mask, as_torch=True,
                **options.fields())
        # Tensors on another device travel through host memory and come back to it.
        device = query.device
        out, softmax_max, softmax_sum = (result.attention_out.to(device),
                                         result.softmax_max.to(device),
                                         result.softmax_sum.to(device))
        ctx.mark_non_differentiable(softmax_max, softmax_sum)
        ctx.save_for_backward(query, key, value, pse, atten_mask, out, softmax_max, softmax_sum)
        ctx.client = client
        ctx.options = options
        ctx.handles = None
        if result.handles:
            shapes = {}
            for name, t in (("query", query), ("key", key), ("value", value), ("pse", pse),
                            ("atten_mask", atten_mask), ("attention_out", out),
                            ("softmax_max", softmax_max), ("softmax_sum", softmax_sum)):
                if t is not None:
                    shapes[name] = (_wire_dtype(t), tuple(t.shape))
            ctx.handles = _Handles(client, result.server, dict(result.handles), shapes)
        return out, softmax_max, softmax_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out, d_max, d_sum):
        query, key, value, pse, atten_mask, out, softmax_max, softmax_sum = ctx.saved_tensors
        if d_out is None:
            d_out = torch.zeros_like(out)
        grads = backward_call(ctx.client, ctx.options, ctx.handles, d_out, query=query, key=key,
                              value=value, pse=pse, atten_mask=atten_mask, attention_out=out,
                              softmax_max=softmax_max, softmax_sum=softmax_sum)
        dq, dk, dv = (g.to(t.device) for g, t in ((grads.dq, query), (grads.dk, key),
                                                   (grads.dv, value)))
        dpse = grads.dpse.to(pse.device) if grads.dpse is not None else None
        need = ctx.needs_input_grad
        return (None, None, None, dq if need[3] else None, dk if need[4] else None,
                dv if need[5] else None, dpse if pse is not None and need[6] else None, None)


def backward_call(client: Client, options: Options, handles: Optional[_Handles], dy,
                  **saved):
    """FlashAttentionScoreGrad for a forward's saved tensors: by handle where the forward left
    one on the server, else (and after NOT_FOUND / UNIMPLEMENTED / UNAVAILABLE) by data."""
    by_data = {_RESIDUALS[name]: t for name, t in saved.items()}
    if handles is not None and handles.handles:
        by_handle = dict(by_data)
        for name in saved:
            resident = handles.resident(name)
            if resident is not None:
                by_handle[_RESIDUALS[name]] = resident
        try:
            return client.flash_attention_score_grad(dy=dy, as_torch=True, **by_handle,
                                                     **options.fields())
        except _RESEND_ON:
            pass
    return client.flash_attention_score_grad(dy=dy, as_torch=True, **by_data,
                                             **options.fields())
