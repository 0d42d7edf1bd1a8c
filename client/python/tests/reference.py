"""An independent float64 reference for the tests: attention written out in torch float64
(so autograd gives the reference gradients), the layouts, and the dropout keep bits
(Philox-4x32-10 as docs/semantics.md states it)."""

import math

import numpy as np
import torch

FLT_MAX = float(np.finfo(np.float32).max)

# Tolerances relative to the largest reference value (docs/semantics.md, Numerics): fp32
# arithmetic for fp32, a few rounding steps of the dtype for fp16 / bf16.
_STEP = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def tolerance(dtype, grad: bool = False) -> float:
    if dtype == torch.float32:
        return 5e-5 if grad else 1e-5
    return (8 if grad else 4) * _STEP[dtype]


def assert_close(actual, expected, dtype, what: str, grad: bool = False):
    actual = torch.as_tensor(np.array(actual) if isinstance(actual, np.ndarray) else actual)
    expected = torch.as_tensor(expected)
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != " \
                                           f"{tuple(expected.shape)}"
    scale = max(expected.abs().max().item(), 1e-30) if expected.numel() else 1.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    limit = tolerance(dtype, grad) * scale
    assert err <= limit, f"{what}: max error {err:.3g} > {limit:.3g} (max |ref| {scale:.3g})"


# --- layouts ---------------------------------------------------------------------------------

def to_bnsd(x: torch.Tensor, layout: str, heads: int) -> torch.Tensor:
    """A padded-layout tensor as [B, N, S, D]."""
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.permute(0, 2, 1, 3)
    if layout == "BSH":
        b, s, h = x.shape
        return x.reshape(b, s, heads, h // heads).permute(0, 2, 1, 3)
    if layout == "SBH":
        s, b, h = x.shape
        return x.reshape(s, b, heads, h // heads).permute(1, 2, 0, 3)
    raise ValueError(layout)


def from_bnsd(x: torch.Tensor, layout: str) -> torch.Tensor:
    b, n, s, d = x.shape
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.permute(0, 2, 1, 3)
    if layout == "BSH":
        return x.permute(0, 2, 1, 3).reshape(b, s, n * d)
    if layout == "SBH":
        return x.permute(2, 0, 1, 3).reshape(s, b, n * d)
    raise ValueError(layout)


def make_layout(bnsd: torch.Tensor, layout: str) -> torch.Tensor:
    """A contiguous tensor in `layout` holding the [B, N, S, D] values."""
    return from_bnsd(bnsd, layout).contiguous()


# --- attention ---------------------------------------------------------------------------------

def attention_bnsd(q, k, v, scale, attend=None, pse=None, pse_type=1, drop_keep=None,
                   keep_prob=1.0):
    """Padded attention on [B, N, S, D] float64 tensors.

    attend: bool, broadcastable to [B, N1, Sq, Skv], True = the key is kept.
    pse: float64 broadcastable to the scores. drop_keep: bool [B, N1, Sq, Skv].
    Returns (out [B, N1, Sq, Dv], softmax_max [B, N1, Sq], softmax_sum [B, N1, Sq]) with the
    service's conventions for rows that keep no key (out 0, max -FLT_MAX, sum FLT_MAX).
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    qk = q @ k.transpose(-1, -2)
    if pse is None:
        s = scale * qk
    elif pse_type == 1:
        s = scale * (qk + pse)
    else:
        s = scale * qk + pse
    if attend is None:
        attend = torch.ones(s.shape, dtype=torch.bool)
    attend = attend.expand(s.shape)
    s = s.masked_fill(~attend, float("-inf"))
    row_kept = attend.any(dim=-1, keepdim=True)
    m = torch.where(row_kept, s.max(dim=-1, keepdim=True).values, torch.zeros_like(s[..., :1]))
    e = torch.where(attend, torch.exp(s - m), torch.zeros_like(s))
    l = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(row_kept, l, torch.ones_like(l))
    if drop_keep is not None:
        p = p * drop_keep.to(p.dtype) / float(np.float32(keep_prob))
    out = p @ v
    softmax_max = torch.where(row_kept, m, torch.full_like(m, -FLT_MAX)).squeeze(-1)
    softmax_sum = torch.where(row_kept, l, torch.full_like(l, FLT_MAX)).squeeze(-1)
    return out, softmax_max, softmax_sum


def causal_attend(sq: int, skv: int, mode: int) -> torch.Tensor:
    """keep(i, j) of sparse_mode 2 (j <= i) or 3 (j <= i + Skv - Sq)."""
    i = torch.arange(sq).unsqueeze(1)
    j = torch.arange(skv).unsqueeze(0)
    return j <= i if mode == 2 else j <= i + (skv - sq)


# --- dropout bits ------------------------------------------------------------------------------

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    """Philox-4x32-10 on arrays: counter 4 arrays, key 2 arrays of 32-bit values."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) for k in key)
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    w0, w1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    for r in range(10):
        if r:
            k0, k1 = (k0 + w0) & _MASK32, (k1 + w1) & _MASK32
        p0, p1 = m0 * c0, m1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def dropout_keep_bits(seed: int, offset: int, keep_prob: float, count: int) -> np.ndarray:
    """keep(k) for bit indices k = 0 .. count-1."""
    groups = np.arange((count + 3) // 4, dtype=np.uint64)
    counter = (groups & _MASK32, groups >> np.uint64(32),
               np.full_like(groups, offset & 0xFFFFFFFF), np.full_like(groups, offset >> 32))
    key = (np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32))
    words = np.stack(philox4x32_10(counter, key), axis=1).reshape(-1)[:count]
    threshold = math.floor(float(np.float32(keep_prob)) * 2.0 ** 32)
    return words < np.uint64(threshold)


def padded_drop_keep(seed, offset, keep_prob, b, n1, sq, skv) -> torch.Tensor:
    bits = dropout_keep_bits(seed, offset, keep_prob, b * n1 * sq * skv)
    return torch.from_numpy(bits.reshape(b, n1, sq, skv))


def tnd_drop_keep(seed, offset, keep_prob, n1, qlens, kvlens):
    """Per batch [1, N1, Sq_b, Skv_b] keep bits (bit index N1·Σ Sq·Skv of earlier batches +
    (n·Sq_b + i)·Skv_b + j)."""
    total = n1 * sum(a * b for a, b in zip(qlens, kvlens))
    bits = dropout_keep_bits(seed, offset, keep_prob, total)
    out, at = [], 0
    for sq, skv in zip(qlens, kvlens):
        size = n1 * sq * skv
        out.append(torch.from_numpy(bits[at:at + size].reshape(1, n1, sq, skv)))
        at += size
    return out
