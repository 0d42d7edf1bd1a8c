#!/usr/bin/env python3
"""One training step's attention through the Python package, beside eager PyTorch.

A step is npu_fusion_attention forward + autograd backward (FlashAttentionScore and
FlashAttentionScoreGrad). For every step it reports the time callers spent in attnserve calls
(`wall_s`: encoding, round trips, decoding), the servers' `compute_s` (ExecutionStats), their
ratio, the bytes sent and received, and whether the backward named the forward's tensors by
handle (resident tensors). Eager PyTorch (matmul -> softmax -> matmul and its autograd) runs
the same shapes on `--threads` threads. One JSON object per line, then a summary of the steps
after the first.

    /usr/bin/python3 client/python/bench/attention_step.py --server build/server/attnserve
    /usr/bin/python3 client/python/bench/attention_step.py --target 127.0.0.1:50051 --dtypes bf16
"""

import argparse
import json
import math
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import attnserve  # noqa: E402
from attnserve.npu import npu_fusion_attention  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def start_server(binary, extra, env):
    log = tempfile.NamedTemporaryFile(prefix="attnserve-bench-", suffix=".log", delete=False)
    process = subprocess.Popen([binary, "--listen=127.0.0.1:0", *extra], stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"\(port (\d+)", pathlib.Path(log.name).read_text())
        if match:
            return process, f"127.0.0.1:{match.group(1)}", log.name
        if process.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"server did not start:\n{pathlib.Path(log.name).read_text()}")


def eager_attention(q, k, v, scale):
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return torch.matmul(p, v)


def attnserve_step(client, base, dy, heads, scale):
    q, k, v = (t.clone().requires_grad_(True) for t in base)
    before = client.totals()
    start = time.perf_counter()
    out = npu_fusion_attention(q, k, v, heads, "BNSD", scale=scale, client=client)[0]
    handles = out.grad_fn.handles is not None and bool(out.grad_fn.handles.handles)
    out.backward(dy)
    step = time.perf_counter() - start
    spent = client.totals() - before
    return dict(step_s=step, wall_s=spent.wall_seconds, compute_s=spent.compute_seconds,
                queue_s=spent.queue_seconds,
                compute_over_wall=spent.compute_seconds / spent.wall_seconds,
                bytes_sent=spent.bytes_sent, bytes_received=spent.bytes_received,
                calls=spent.calls, backward_by_handle=handles)


def stubs_step(stub, base, dy, heads, scale):
    """The same step through the generated stubs the obvious way: tensors copied into request
    messages (tobytes), outputs copied out of the response messages."""
    from attnserve import _wire
    from attnserve.v1 import attention_pb2 as pb

    dtype = _wire.datatype(base[0].dtype)
    bits = torch.int16 if base[0].dtype == torch.bfloat16 else None

    def tensor(t):
        array = (t.view(bits) if bits is not None else t).numpy()
        return pb.Tensor(dtype=dtype, shape=t.shape, data=array.tobytes())

    def back(message, like):
        array = _wire.wire_array(message.dtype, tuple(message.shape), message.data).copy()
        if bits is not None and message.dtype == dtype:
            return torch.from_numpy(array.view(np.int16)).view(like.dtype)
        return torch.from_numpy(array)

    q, k, v = base
    start = time.perf_counter()
    fwd = stub.FlashAttentionScore(pb.FlashAttentionScoreRequest(
        query=tensor(q), key=tensor(k), value=tensor(v), head_num=heads, input_layout="BNSD",
        scale_value=scale))
    out = back(fwd.attention_out, q)
    smax, ssum = back(fwd.softmax_max, q), back(fwd.softmax_sum, q)
    grad = stub.FlashAttentionScoreGrad(pb.FlashAttentionScoreGradRequest(
        query=tensor(q), key=tensor(k), value=tensor(v), dy=tensor(dy),
        attention_in=tensor(out), softmax_max=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32,
                                                        shape=smax.shape,
                                                        data=smax.numpy().tobytes()),
        softmax_sum=pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=ssum.shape,
                              data=ssum.numpy().tobytes()),
        head_num=heads, input_layout="BNSD", scale_value=scale))
    grads = [back(grad.dq, q), back(grad.dk, q), back(grad.dv, q)]
    wall = time.perf_counter() - start
    compute = fwd.stats.compute_seconds + grad.stats.compute_seconds
    del grads
    return dict(wall_s=wall, compute_s=compute, compute_over_wall=compute / wall)


def eager_step(base, dy, scale):
    q, k, v = (t.clone().requires_grad_(True) for t in base)
    start = time.perf_counter()
    eager_attention(q, k, v, scale).backward(dy)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a running server (host:port)")
    where.add_argument("--server", help="start this attnserve binary on a free port")
    parser.add_argument("--server_args", default="", help="extra flags for --server")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--b", type=int, default=1)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--s", type=int, default=4096)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="steps per dtype (the first is "
                        "reported but left out of the summary)")
    parser.add_argument("--eager_steps", type=int, default=2,
                        help="eager PyTorch steps per dtype (0 = none)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for eager")
    parser.add_argument("--stubs_steps", type=int, default=0,
                        help="also this many steps through the generated stubs directly")
    parser.add_argument("--tune_malloc", action="store_true",
                        help="call attnserve.tune_malloc() first (warm buffers)")
    parser.add_argument("--server_env", default="",
                        help="KEY=VALUE,... environment of the --server process")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tuned = attnserve.tune_malloc() if args.tune_malloc else False
    process = None
    target = args.target
    if args.server:
        env = dict(os.environ)
        env.update(item.split("=", 1) for item in args.server_env.split(",") if item)
        process, target, _ = start_server(args.server, args.server_args.split(), env)
    client = attnserve.connect(target, timeout=600)
    try:
        info = client.get_server_info()
        print(json.dumps({"kind": "setup", "target": target, "server_version": info.version,
                          "backends": list(info.compute_backends),
                          "server_workers": info.worker_count, "torch": torch.__version__,
                          "torch_threads": args.threads, "client_tune_malloc": tuned,
                          "server_env": args.server_env,
                          "malloc_env": {k: v for k, v in os.environ.items()
                                         if k.startswith("MALLOC_")}}), flush=True)
        shape = (args.b, args.n, args.s, args.d)
        scale = 1.0 / math.sqrt(args.d)
        for name in args.dtypes.split(","):
            dtype = DTYPES[name]
            g = torch.Generator().manual_seed(0)
            base = [torch.randn(shape, generator=g).to(dtype) for _ in range(3)]
            dy = torch.randn(shape, generator=g).to(dtype)
            rows = []
            for step in range(args.steps):
                row = dict(kind="attnserve_step", dtype=name, shape=list(shape), step=step,
                           **attnserve_step(client, base, dy, args.n, scale))
                rows.append(row)
                print(json.dumps(row), flush=True)
            stubs = []
            if args.stubs_steps:
                import grpc

                from attnserve.v1 import attention_pb2_grpc

                channel = grpc.insecure_channel(target, options=[
                    ("grpc.max_send_message_length", 1 << 30),
                    ("grpc.max_receive_message_length", 1 << 30)])
                stub = attention_pb2_grpc.AttentionServiceStub(channel)
                for step in range(args.stubs_steps):
                    stubs.append(stubs_step(stub, base, dy, args.n, scale))
                    print(json.dumps(dict(kind="stubs_step", dtype=name, step=step,
                                          **stubs[-1])), flush=True)
                channel.close()
            eager = []
            for step in range(args.eager_steps):
                eager.append(eager_step(base, dy, scale))
                print(json.dumps(dict(kind="eager_step", dtype=name, step=step,
                                      step_s=eager[-1])), flush=True)
            later = rows[1:] or rows
            summary = dict(
                kind="summary", dtype=name, shape=list(shape), steps=len(later),
                compute_over_wall_median=statistics.median(r["compute_over_wall"]
                                                           for r in later),
                compute_over_wall_min=min(r["compute_over_wall"] for r in later),
                wall_s_median=statistics.median(r["wall_s"] for r in later),
                compute_s_median=statistics.median(r["compute_s"] for r in later),
                step_s_median=statistics.median(r["step_s"] for r in later),
                bytes_per_step=later[-1]["bytes_sent"] + later[-1]["bytes_received"],
                backward_by_handle=all(r["backward_by_handle"] for r in later))
            if stubs:
                later_stubs = stubs[1:] or stubs
                summary["stubs_compute_over_wall_median"] = statistics.median(
                    r["compute_over_wall"] for r in later_stubs)
            if eager:
                summary["eager_step_s_best"] = min(eager)
                summary["eager_over_attnserve_step"] = min(eager) / summary["step_s_median"]
            print(json.dumps(summary), flush=True)
    finally:
        client.close()
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


if __name__ == "__main__":
    main()
