#!/usr/bin/env python3
"""Client-side cost of turning tensors into request bytes and response bytes into tensors,
without a server: the package's encoder / parser against the generated message classes used
the obvious way (tobytes into the message, SerializeToString; FromString, .data, a copy out).

    /usr/bin/python3 client/python/bench/codec.py                  # B1 N8 S4096 D128 fp32
    /usr/bin/python3 client/python/bench/codec.py --tune_malloc     # with warm buffers

Prints one JSON object per case: best-of-N milliseconds and GB/s of the tensor bytes.
"""

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import attnserve  # noqa: E402
from attnserve import _wire  # noqa: E402
from attnserve.client import _FORWARD, Client  # noqa: E402
from attnserve.v1 import attention_pb2 as pb  # noqa: E402


def best_ms(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        del result
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,8,4096,128")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tune_malloc", action="store_true")
    args = parser.parse_args()
    tuned = attnserve.tune_malloc() if args.tune_malloc else False
    shape = tuple(int(x) for x in args.shape.split(","))
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    tensor_bytes = 3 * q.nbytes
    client = Client("127.0.0.1:1")  # never called: only its encoder is used

    def package_encode():
        tensors = {n: _wire.to_wire(t) for n, t in (("query", q), ("key", k), ("value", v))}
        return b"".join(client._encode(_FORWARD, tensors, {"head_num": shape[1],
                                                           "input_layout": "BNSD"}))

    def stubs_encode():
        request = pb.FlashAttentionScoreRequest(head_num=shape[1], input_layout="BNSD")
        for name, t in (("query", q), ("key", k), ("value", v)):
            getattr(request, name).CopyFrom(pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=shape,
                                                      data=t.tobytes()))
        return request.SerializeToString()

    # A response as the server sends it: the three tensors as dq, dk, dv.
    response = pb.FlashAttentionScoreGradResponse()
    for name, t in (("dq", q), ("dk", k), ("dv", v)):
        getattr(response, name).CopyFrom(pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=shape,
                                                   data=t.tobytes()))
    wire = response.SerializeToString()

    def package_decode():
        _, outputs = _wire.parse_response(pb.FlashAttentionScoreGradResponse, wire)
        return [_wire.from_wire(outputs[n], as_torch=False) for n in ("dq", "dk", "dv")]

    def stubs_decode():
        message = pb.FlashAttentionScoreGradResponse.FromString(wire)
        return [np.frombuffer(getattr(message, n).data, np.float32).reshape(shape).copy()
                for n in ("dq", "dk", "dv")]

    parse = pb.FlashAttentionScoreRequest.FromString
    assert parse(package_encode()) == parse(stubs_encode())  # same message, other field order
    for a, b in zip(package_decode(), stubs_decode()):
        assert np.array_equal(a, b)
    for name, fn in (("encode_package", package_encode), ("encode_stubs", stubs_encode),
                     ("decode_package", package_decode), ("decode_stubs", stubs_decode)):
        ms = best_ms(fn, args.repeats)
        print(json.dumps(dict(case=name, shape=list(shape), tensor_mib=tensor_bytes / 2 ** 20,
                              best_ms=round(ms, 2),
                              gb_per_s=round(tensor_bytes / ms / 1e6, 2),
                              tune_malloc=tuned)), flush=True)


if __name__ == "__main__":
    main()
