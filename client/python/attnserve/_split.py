"""Splitting one FlashAttentionScore(Grad) call into concurrent calls over batch and head groups.

Every (batch, kv head) of a request is computed independently of the others, and the backward
sums a kv head's dK/dV over its G query heads in a fixed order inside one call. A part is a
rectangle of batches × kv heads (with their query heads), so its outputs are exactly the
matching slices of the unsplit outputs and concatenating them gives the same bits.

Not split (the whole call goes as one): dropout (the generated mask's bit index counts over the
whole request), a `drop_mask`, tensors given by handle, and — for the batch axis only — a
gradient of a pse shared by the batches (its dpse would be a sum over the parts).
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from attnserve._wire import WireTensor

_PADDED = ("BSH", "SBH", "BSND", "BNSD")


@dataclasses.dataclass(frozen=True)
class Axes:
    """Where a tensor holds batches and heads: the axis index (None = not along it) and, for
    BSH / SBH, the elements per head on the head axis."""

    batch: Optional[int]
    head: Optional[int]
    unit: int = 1
    kv: bool = False  # indexed by kv heads (key, value, dk, dv) rather than query heads


@dataclasses.dataclass
class Geometry:
    layout: str
    batch: int        # B (1 for TND: never split along it)
    heads: int        # N1
    kv_heads: int     # N2
    dim: int          # D
    value_dim: int    # Dv


@dataclasses.dataclass
class Part:
    batches: Tuple[int, int]   # [b0, b1)
    kv_heads: Tuple[int, int]  # [h0, h1)


def geometry(layout: str, head_num: int, query: WireTensor, key: WireTensor,
             value: WireTensor) -> Optional[Geometry]:
    q, k, v = query.shape, key.shape, value.shape
    try:
        if layout in ("BSH", "SBH"):
            d = q[2] // head_num
            n2 = k[2] // d
            return Geometry(layout, q[0] if layout == "BSH" else q[1], head_num, n2, d,
                            v[2] // n2)
        if layout == "BSND":
            return Geometry(layout, q[0], q[2], k[2], q[3], v[3])
        if layout == "BNSD":
            return Geometry(layout, q[0], q[1], k[1], q[3], v[3])
        if layout == "TND":
            return Geometry(layout, 1, q[1], k[1], q[2], v[2])
    except (IndexError, ZeroDivisionError):
        return None
    return None


def _qkv_axes(g: Geometry, kv: bool, unit: int) -> Axes:
    return {
        "BSH": Axes(0, 2, unit, kv),
        "SBH": Axes(1, 2, unit, kv),
        "BSND": Axes(0, 2, 1, kv),
        "BNSD": Axes(0, 1, 1, kv),
        "TND": Axes(None, 1, 1, kv),
    }[g.layout]


def axes_of(name: str, shape: Sequence[int], g: Geometry) -> Optional[Axes]:
    """The Axes of a request or response tensor, or None when it must go whole to every
    part (reserved tensors, compressed masks)."""
    if name in ("query", "dq"):
        return _qkv_axes(g, False, g.dim)
    if name in ("dy", "attention_in", "attention_out"):
        return _qkv_axes(g, False, g.value_dim)
    if name in ("key", "dk"):
        return _qkv_axes(g, True, g.dim)
    if name in ("value", "dv"):
        return _qkv_axes(g, True, g.value_dim)
    if name in ("softmax_max", "softmax_sum"):
        return Axes(None if g.layout == "TND" else 0, 1)
    batched = g.layout != "TND" and g.batch > 1
    if name in ("pse", "dpse"):
        if len(shape) == 4:
            return Axes(0 if batched and shape[0] == g.batch else None, 1)
        if len(shape) == 2:  # ALiBi slopes [B, N1]
            return Axes(0 if batched and shape[0] == g.batch else None, 1)
        if len(shape) == 1:  # slopes [N1]
            return Axes(None, 0)
        return None
    if name == "atten_mask":
        if len(shape) == 4:
            return Axes(0 if batched and shape[0] == g.batch else None,
                        1 if shape[1] == g.heads and g.heads > 1 else None)
        return None
    return None


def plan(g: Geometry, parts: int, tensors: Dict[str, WireTensor], grad: bool) -> List[Part]:
    """The parts of a split call; a single part when it cannot or need not be split."""
    whole = [Part((0, g.batch), (0, g.kv_heads))]
    if parts < 2 or g.layout not in _PADDED + ("TND",):
        return whole
    if "drop_mask" in tensors or any(t.array is None for t in tensors.values()):
        return whole
    batch_ok = g.layout != "TND" and g.batch > 1
    pse = tensors.get("pse")
    if grad and pse is not None and batch_ok:
        axes = axes_of("pse", pse.shape, g)
        if axes is None or axes.batch is None:
            batch_ok = False  # dpse of a pse shared by the batches sums over them
    nb = min(g.batch, parts) if batch_ok else 1
    nh = min(g.kv_heads, math.ceil(parts / nb))
    if nb * nh < 2:
        return whole
    return [Part(b, h) for b in _ranges(g.batch, nb) for h in _ranges(g.kv_heads, nh)]


def _ranges(total: int, groups: int) -> List[Tuple[int, int]]:
    bounds = [round(i * total / groups) for i in range(groups + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(groups)]


def _index(axes: Axes, ndim: int, g: Geometry, part: Part) -> tuple:
    index = [slice(None)] * ndim
    if axes.batch is not None:
        index[axes.batch] = slice(*part.batches)
    if axes.head is not None:
        h0, h1 = part.kv_heads
        group = 1 if axes.kv else g.heads // g.kv_heads
        index[axes.head] = slice(h0 * group * axes.unit, h1 * group * axes.unit)
    return tuple(index)


def slice_tensor(name: str, tensor: WireTensor, g: Geometry, part: Part) -> WireTensor:
    axes = axes_of(name, tensor.shape, g)
    if axes is None:
        return tensor
    view = tensor.array[_index(axes, tensor.array.ndim, g, part)]
    return WireTensor(tensor.dtype, tuple(view.shape), np.ascontiguousarray(view))


def part_scalars(scalars: dict, g: Geometry, part: Part) -> dict:
    out = dict(scalars)
    out["head_num"] = (part.kv_heads[1] - part.kv_heads[0]) * (g.heads // g.kv_heads)
    if scalars.get("prefix"):
        out["prefix"] = list(scalars["prefix"])[part.batches[0]:part.batches[1]]
    return out


# Output -> the input whose shape it has (its axes are read from the whole input's shape).
_OUTPUT_INPUT = {"dq": "query", "dk": "key", "dv": "value", "dpse": "pse"}


def assemble(name: str, pieces: List[WireTensor], g: Geometry, parts: List[Part],
             inputs: Dict[str, WireTensor]) -> WireTensor:
    """One output from its parts' pieces (parts ordered batch-major, as plan() returns them)."""
    first = pieces[0]
    source = inputs.get(_OUTPUT_INPUT.get(name, ""))
    axes = axes_of(name, source.shape if source is not None else first.shape, g)
    batch_groups: Dict[Tuple[int, int], List[np.ndarray]] = {}
    for piece, part in zip(pieces, parts):
        batch_groups.setdefault(part.batches, []).append(piece.array)
    rows = []
    for arrays in batch_groups.values():
        if len(arrays) == 1:
            rows.append(arrays[0])
        else:
            rows.append(np.concatenate(arrays, axis=axes.head))
    if len(rows) == 1:
        array = rows[0]
    else:
        array = np.concatenate(rows, axis=axes.batch)
    return WireTensor(first.dtype, tuple(array.shape), array)
