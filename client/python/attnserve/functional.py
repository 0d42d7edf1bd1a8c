"""PyTorch's scaled_dot_product_attention, computed by attnserve.

    from attnserve.functional import scaled_dot_product_attention
    out = scaled_dot_product_attention(q, k, v, is_causal=True)   # [B, N, S, D]

PyTorch's conventions are translated to the service's:

- `[B, N, S, D]` (or `[N, S, D]`) tensors. A query/key/value that is a transposed view of a
  `[B, S, N, D]` tensor (the usual `x.view(B, S, N, D).transpose(1, 2)`) is sent as BSND without
  a copy, and the output is the matching view.
- key/value with fewer heads than query: grouped-query attention (N1 a multiple of N2).
- A bool `attn_mask` (True = attend) becomes the service's `atten_mask` (1 = masked); a float
  mask is added to the scaled scores (sent as `pse` with pse_type 0) and gets a gradient when it
  requires one. Masks broadcast as in PyTorch.
- `is_causal`: the top-left causal mask (query i attends keys j ≤ i), sparse_mode 2.
- `scale` defaults to 1/sqrt(D) and is always sent explicitly.
- `dropout_p`: keep_prob = 1 − dropout_p with a seed from torch's default generator.

A query row whose bool mask attends to no key gives 0 (PyTorch's math kernel gives NaN).
"""

import math
from typing import Optional

import torch

from attnserve._autograd import Options, attention
from attnserve.client import Client, default_client
from attnserve.npu import dropout_seed

__all__ = ["scaled_dot_product_attention"]


def _bsnd_view(t: torch.Tensor) -> bool:
    """True when t ([B, N, S, D]) is a transposed view of a contiguous [B, S, N, D] tensor."""
    return t.transpose(1, 2).is_contiguous() and not t.is_contiguous()


def _mask_shape(mask: torch.Tensor, b: int, n: int, sq: int, skv: int, is_bool: bool):
    """The shape to expand a broadcastable mask to: the smallest form the service takes."""
    m = (1,) * (4 - mask.dim()) + tuple(mask.shape)
    if tuple(m[2:]) != (sq, skv) and not (m[2] in (1, sq) and m[3] in (1, skv)):
        raise ValueError(f"attn_mask of shape {list(mask.shape)} does not broadcast to "
                         f"[{b}, {n}, {sq}, {skv}]")
    if is_bool:  # atten_mask: [B,N1,Sq,Skv], [B,1,Sq,Skv] or [1,1,Sq,Skv]
        if m[0] == 1 and m[1] == 1:
            return (1, 1, sq, skv)
        if m[1] == 1:
            return (b, 1, sq, skv)
        return (b, n, sq, skv)
    # pse (pse_type 0): [B,N1,Sq,Skv], [1,N1,Sq,Skv] or [B,N1,1,Skv]
    if m[2] == 1 and (m[0] != 1 or b < sq):
        return (b, n, 1, skv)
    if m[0] == 1:
        return (1, n, sq, skv)
    return (b, n, sq, skv)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: Optional[float] = None, *,
                                 client: Optional[Client] = None) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention on attnserve (see the module doc)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a torch.Tensor")
    squeeze = query.dim() == 3
    if squeeze:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        if attn_mask is not None and attn_mask.dim() == 4:
            raise ValueError("scaled_dot_product_attention: a 4-D attn_mask needs 4-D inputs")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError("scaled_dot_product_attention: query, key and value must be "
                         f"[B, N, S, D], got {list(query.shape)}, {list(key.shape)}, "
                         f"{list(value.shape)}")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: attn_mask and is_causal are exclusive")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got "
                         f"{dropout_p}")
    b, n1, sq, d = query.shape
    n2, skv = key.shape[1], key.shape[2]
    if key.shape[0] != b or value.shape[:3] != key.shape[:3] or n2 == 0 or n1 % n2:
        raise ValueError("scaled_dot_product_attention: key/value must be [B, N2, S, D] with "
                         f"N1 = {n1} a multiple of N2, got {list(key.shape)}, "
                         f"{list(value.shape)}")
    client = client or default_client()
    bsnd = all(_bsnd_view(t) for t in (query, key, value))
    layout = "BSND" if bsnd else "BNSD"
    q, k, v = ((t.transpose(1, 2) for t in (query, key, value)) if bsnd
               else (query, key, value))

    pse, atten_mask, pse_type = None, None, None
    if attn_mask is not None:
        is_bool = attn_mask.dtype == torch.bool
        shape = _mask_shape(attn_mask, b, n1, sq, skv, is_bool)
        m = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
        if is_bool:
            atten_mask = (~m).expand(shape)
        else:
            pse = m.to(query.dtype).expand(shape)
            pse_type = 0
    keep_prob = 1.0 - float(dropout_p)
    options = Options(
        head_num=n1, input_layout=layout,
        scale_value=float(1.0 / math.sqrt(d) if scale is None else scale),
        keep_prob=keep_prob, sparse_mode=2 if is_causal else 0, pse_type=pse_type,
        seed=dropout_seed() if keep_prob < 1.0 else None,
        offset=0 if keep_prob < 1.0 else None)
    out = attention(client, options, q, k, v, pse, atten_mask)[0]
    if bsnd:
        out = out.transpose(1, 2)
    return out.squeeze(0) if squeeze else out
