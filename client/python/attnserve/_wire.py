"""Tensors on the wire: numpy / torch buffers to attnserve.v1.Tensor bytes and back.

Requests are assembled without materializing the tensor data in a protobuf message: the small
fields are serialized by the generated message class, and each tensor field is appended as its
wire-format bytes around a view of the caller's buffer, so the data is copied once (into the
request bytes that gRPC sends). Responses are parsed the same way: tensor fields become numpy
arrays viewing the response bytes (no copy); the other fields go through the message class.
"""

import dataclasses
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from attnserve.v1 import attention_pb2 as pb

DataType = pb.DataType

# DataType -> (numpy dtype that carries the bytes, itemsize). BFLOAT16 and FLOAT8 travel as
# their raw bits (uint16 / uint8): numpy has no such dtype.
_CARRIER = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    pb.DATA_TYPE_BFLOAT16: np.dtype("<u2"),
    pb.DATA_TYPE_FLOAT8_E4M3FN: np.dtype("u1"),
    pb.DATA_TYPE_FLOAT8_E5M2: np.dtype("u1"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_BOOL: np.dtype("?"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
}

_NUMPY_TO_DATATYPE = {
    np.dtype("float32"): pb.DATA_TYPE_FLOAT32,
    np.dtype("float16"): pb.DATA_TYPE_FLOAT16,
    np.dtype("uint8"): pb.DATA_TYPE_UINT8,
    np.dtype("bool"): pb.DATA_TYPE_BOOL,
    np.dtype("int32"): pb.DATA_TYPE_INT32,
    np.dtype("int64"): pb.DATA_TYPE_INT64,
}

# Names accepted wherever a dtype is given as a string ("bf16", "bfloat16", "FLOAT16", ...).
_DTYPE_NAMES = {
    "fp32": pb.DATA_TYPE_FLOAT32, "float32": pb.DATA_TYPE_FLOAT32, "float": pb.DATA_TYPE_FLOAT32,
    "fp16": pb.DATA_TYPE_FLOAT16, "float16": pb.DATA_TYPE_FLOAT16, "half": pb.DATA_TYPE_FLOAT16,
    "bf16": pb.DATA_TYPE_BFLOAT16, "bfloat16": pb.DATA_TYPE_BFLOAT16,
    "float8_e4m3fn": pb.DATA_TYPE_FLOAT8_E4M3FN, "float8_e5m2": pb.DATA_TYPE_FLOAT8_E5M2,
    "uint8": pb.DATA_TYPE_UINT8, "bool": pb.DATA_TYPE_BOOL,
    "int32": pb.DATA_TYPE_INT32, "int64": pb.DATA_TYPE_INT64,
}

class _TorchTables:
    """torch dtype <-> DataType, built on first use: torch is imported only by callers that
    pass torch tensors (or ask for them), so numpy users never pay for importing it."""

    def __init__(self):
        import torch

        self.torch = torch
        self.to_datatype = {
            torch.float32: pb.DATA_TYPE_FLOAT32,
            torch.float16: pb.DATA_TYPE_FLOAT16,
            torch.bfloat16: pb.DATA_TYPE_BFLOAT16,
            torch.uint8: pb.DATA_TYPE_UINT8,
            torch.bool: pb.DATA_TYPE_BOOL,
            torch.int32: pb.DATA_TYPE_INT32,
            torch.int64: pb.DATA_TYPE_INT64,
        }
        for name, code in (("float8_e4m3fn", pb.DATA_TYPE_FLOAT8_E4M3FN),
                           ("float8_e5m2", pb.DATA_TYPE_FLOAT8_E5M2)):
            if hasattr(torch, name):  # torch >= 2.1
                self.to_datatype[getattr(torch, name)] = code
        self.from_datatype = {code: dtype for dtype, code in self.to_datatype.items()}
        # The integer type whose bits a 16- or 8-bit float is viewed as on the way to numpy.
        self.bits_view = {pb.DATA_TYPE_BFLOAT16: torch.int16,
                          pb.DATA_TYPE_FLOAT8_E4M3FN: torch.uint8,
                          pb.DATA_TYPE_FLOAT8_E5M2: torch.uint8}


_tables = None


def _torch_tables() -> _TorchTables:
    global _tables
    if _tables is None:
        _tables = _TorchTables()
    return _tables


def datatype(value) -> int:
    """A DataType number from a DataType, its name, a short name, a numpy or torch dtype."""
    if isinstance(value, int) and value in _CARRIER:
        return value
    if isinstance(value, str):
        key = value.lower()
        if key.startswith("data_type_"):
            key = key[len("data_type_"):]
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    elif is_torch_dtype(value):
        code = _torch_tables().to_datatype.get(value)
        if code is not None:
            return code
    else:
        try:
            return _NUMPY_TO_DATATYPE[np.dtype(value)]
        except (TypeError, KeyError):
            pass
    raise TypeError(f"attnserve: unsupported dtype {value!r}")


def datatype_name(code: int) -> str:
    return pb.DataType.Name(code)


def is_torch(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_torch_dtype(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.dtype)


@dataclasses.dataclass
class RawTensor:
    """A tensor given by its DataType and raw little-endian bytes.

    For dtypes numpy lacks (BFLOAT16, FLOAT8): `data` is a numpy array of the bits (uint16 for
    BFLOAT16, uint8 for FLOAT8) shaped like the tensor. Numpy callers get BFLOAT16 / FLOAT8
    outputs in this form; `to_float32()` widens them.
    """

    dtype: int
    data: np.ndarray

    def __post_init__(self):
        self.dtype = datatype(self.dtype)
        carrier = _CARRIER[self.dtype]
        data = np.asarray(self.data)
        if data.dtype != carrier:
            if data.dtype.itemsize != carrier.itemsize:
                raise TypeError(f"attnserve: RawTensor of {datatype_name(self.dtype)} needs "
                                f"{carrier.itemsize}-byte elements, got {data.dtype}")
            data = data.view(carrier)
        self.data = data

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.data.shape)

    def to_float32(self) -> np.ndarray:
        """The values widened to float32 (exact for every dtype but INT32/INT64)."""
        if self.dtype == pb.DATA_TYPE_BFLOAT16:
            return (self.data.astype(np.uint32) << 16).view(np.float32)
        if self.dtype in (pb.DATA_TYPE_FLOAT8_E4M3FN, pb.DATA_TYPE_FLOAT8_E5M2):
            return _float8_to_float32(self.data, self.dtype)
        return self.data.astype(np.float32)


def _float8_to_float32(bits: np.ndarray, code: int) -> np.ndarray:
    exp_bits, bias = (4, 7) if code == pb.DATA_TYPE_FLOAT8_E4M3FN else (5, 15)
    man_bits = 7 - exp_bits
    b = bits.astype(np.int32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> man_bits) & ((1 << exp_bits) - 1)
    m = b & ((1 << man_bits) - 1)
    normal = (1.0 + m / (1 << man_bits)) * np.exp2(e.astype(np.float64) - bias)
    subnormal = (m / (1 << man_bits)) * 2.0 ** (1 - bias)
    value = sign * np.where(e == 0, subnormal, normal)
    if code == pb.DATA_TYPE_FLOAT8_E4M3FN:
        value = np.where((b & 0x7F) == 0x7F, np.nan, value)
    else:
        top = e == (1 << exp_bits) - 1
        value = np.where(top & (m == 0), sign * np.inf, value)
        value = np.where(top & (m != 0), np.nan, value)
    return value.astype(np.float32)


@dataclasses.dataclass
class WireTensor:
    """A tensor ready for a request, or read from a response.

    `array` is a C-contiguous numpy array carrying the bytes (see _CARRIER), or None when the
    tensor is named by `handle` (a resident tensor).
    """

    dtype: int
    shape: Tuple[int, ...]
    array: Optional[np.ndarray] = None
    handle: str = ""

    @property
    def nbytes(self) -> int:
        return 0 if self.array is None else self.array.nbytes


def to_wire(value, name: str = "tensor") -> WireTensor:
    """A WireTensor viewing the caller's buffer (a copy only when it is not contiguous)."""
    if isinstance(value, WireTensor):
        return value
    handle = getattr(value, "_attnserve_handle", None)
    if handle is not None:  # a ResidentTensor
        return WireTensor(value.dtype, tuple(value.shape), None, handle)
    if is_torch(value):
        tables = _torch_tables()
        code = tables.to_datatype.get(value.dtype)
        if code is None:
            raise TypeError(f"attnserve: {name} has unsupported dtype {value.dtype}")
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        bits = tables.bits_view.get(code)
        array = (t.view(bits) if bits is not None else t).numpy()
        array = array.view(_CARRIER[code])
        return WireTensor(code, tuple(value.shape), array)
    if isinstance(value, RawTensor):
        return WireTensor(value.dtype, value.shape, _contiguous_le(value.data))
    if isinstance(value, np.ndarray) or hasattr(value, "__array_interface__"):
        array = np.asarray(value)
        code = _NUMPY_TO_DATATYPE.get(array.dtype.newbyteorder("="))
        if code is None:
            raise TypeError(f"attnserve: {name} has unsupported numpy dtype {array.dtype} "
                            "(use attnserve.RawTensor for BFLOAT16 / FLOAT8 bits)")
        return WireTensor(code, tuple(array.shape), _contiguous_le(array.astype(_CARRIER[code],
                                                                                 copy=False)))
    raise TypeError(f"attnserve: {name} must be a torch tensor, numpy array, RawTensor or "
                    f"ResidentTensor, got {type(value).__name__}")


def _contiguous_le(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.byteswap().view(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def wire_array(code: int, shape: Sequence[int], buffer, offset: int = 0) -> np.ndarray:
    """A numpy array of `shape` viewing `buffer` at `offset` (no copy)."""
    carrier = _CARRIER[code]
    count = 1
    for dim in shape:
        count *= dim
    return np.frombuffer(buffer, dtype=carrier, count=count, offset=offset).reshape(shape)


def from_wire(tensor: WireTensor, as_torch: bool):
    """The caller's form of a response tensor: a torch tensor, or a numpy array (RawTensor for
    BFLOAT16 / FLOAT8). Both view the response bytes; torch tensors made from them are writable
    views of a buffer nothing else refers to."""
    if tensor.array is None:
        raise ValueError("attnserve: the output was returned by handle only")
    array = tensor.array
    if as_torch:
        tables = _torch_tables()
        if tensor.dtype not in tables.from_datatype:
            raise TypeError(f"attnserve: torch has no dtype for {datatype_name(tensor.dtype)}")
        bits = tables.bits_view.get(tensor.dtype)
        if bits is not None:
            array = array.view(np.int16 if bits == tables.torch.int16 else np.uint8)
        t = _torch_from_numpy(tables.torch, array)
        if bits is not None:
            t = t.view(tables.from_datatype[tensor.dtype])
        return t
    if tensor.dtype in (pb.DATA_TYPE_BFLOAT16, pb.DATA_TYPE_FLOAT8_E4M3FN,
                        pb.DATA_TYPE_FLOAT8_E5M2):
        return RawTensor(tensor.dtype, array)
    return array


def _torch_from_numpy(torch, array: np.ndarray):
    """torch.from_numpy for arrays viewing immutable response bytes.

    The response bytes object is referenced by nothing but the array, so the tensor may own it
    as its storage; torch would only warn that numpy marked it read-only.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


# --- protobuf wire format ----------------------------------------------------------------------

_VARINT, _LEN = 0, 2


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(buf, pos: int, wire_type: int) -> int:
    if wire_type == _VARINT:
        return _read_varint(buf, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == _LEN:
        length, pos = _read_varint(buf, pos)
        return pos + length
    if wire_type == 5:
        return pos + 4
    raise ValueError(f"attnserve: unsupported protobuf wire type {wire_type}")


def tensor_field_parts(field_number: int, tensor: WireTensor) -> List:
    """The wire bytes of `field_number: Tensor` as a list of parts (the data part is a view)."""
    header = pb.Tensor(dtype=tensor.dtype, shape=tensor.shape,
                       handle=tensor.handle).SerializeToString()
    if tensor.array is None:
        return [varint(field_number << 3 | _LEN), varint(len(header)), header]
    data = memoryview(tensor.array.reshape(-1).view(np.uint8))
    data_tag = varint(3 << 3 | _LEN) + varint(len(data))
    body = len(header) + len(data_tag) + len(data)
    return [varint(field_number << 3 | _LEN), varint(body), header, data_tag, data]


def message_field_parts(field_number: int, body_parts: List) -> List:
    length = sum(len(p) for p in body_parts)
    return [varint(field_number << 3 | _LEN), varint(length)] + body_parts


def tensor_fields(message_class) -> Dict[int, str]:
    """Field number -> name of the Tensor fields of a message class."""
    return {f.number: f.name for f in message_class.DESCRIPTOR.fields
            if f.message_type is not None and f.message_type.full_name == "attnserve.v1.Tensor"}


def _parse_tensor(buf, pos: int, end: int) -> WireTensor:
    dtype = 0
    shape: List[int] = []
    data_at, data_len = -1, 0
    handle = ""
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 1 and wire_type == _VARINT:
            dtype, pos = _read_varint(buf, pos)
        elif number == 2 and wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            stop = pos + length
            if stop > end:
                raise ValueError("tensor shape runs past its message")
            while pos < stop:
                dim, pos = _read_varint(buf, pos)
                shape.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
        elif number == 2 and wire_type == _VARINT:
            dim, pos = _read_varint(buf, pos)
            shape.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
        elif number == 3 and wire_type == _LEN:
            data_len, pos = _read_varint(buf, pos)
            data_at = pos
            pos += data_len
            if pos > end:
                raise ValueError("tensor data runs past its message")
        elif number == 4 and wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            handle = bytes(buf[pos:pos + length]).decode("utf-8")
            pos += length
        else:
            pos = _skip(buf, pos, wire_type)
    if pos != end:
        raise ValueError("a tensor field runs past its message")
    if any(dim < 0 for dim in shape):
        raise ValueError(f"negative dimension in {shape}")
    shape_t = tuple(shape)
    array = None
    if data_at >= 0 or not handle:
        if dtype not in _CARRIER:
            raise ValueError(f"attnserve: response tensor of unknown dtype {dtype}")
        expected = _CARRIER[dtype].itemsize * int(np.prod(shape_t, dtype=np.int64))
        if data_len != expected:
            raise ValueError(f"attnserve: response tensor of shape {list(shape_t)} carries "
                             f"{data_len} bytes, expected {expected}")
        array = wire_array(dtype, shape_t, buf, max(data_at, 0)) if expected else \
            np.zeros(shape_t, dtype=_CARRIER[dtype])
    return WireTensor(dtype, shape_t, array, handle)


class MalformedResponse(ValueError):
    """Response bytes that are not a valid message of the expected type."""


def parse_response(message_class, data: bytes):
    """(message without its tensor fields, {field name: WireTensor}) from response bytes.
    MalformedResponse when the bytes do not parse (truncated, lengths past the end, a tensor
    whose data does not match its shape)."""
    from google.protobuf.message import DecodeError

    try:
        return _parse_response(message_class, data)
    except (IndexError, ValueError, DecodeError) as error:
        raise MalformedResponse(f"attnserve: malformed {message_class.DESCRIPTOR.name}: "
                                f"{error}") from None


def _parse_response(message_class, data: bytes):
    tensor_numbers = tensor_fields(message_class)
    rest = []
    tensors: Dict[str, WireTensor] = {}
    buf = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if number in tensor_numbers and wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise ValueError(f"field {tensor_numbers[number]} runs past the end")
            tensors[tensor_numbers[number]] = _parse_tensor(buf, pos, pos + length)
            pos += length
        else:
            pos = _skip(buf, pos, wire_type)
            if pos > end:
                raise ValueError(f"field {number} runs past the end")
            rest.append(buf[start:pos])
    message = message_class.FromString(b"".join(rest))
    return message, tensors
