#!/usr/bin/env python3
"""Eager PyTorch attention (matmul -> softmax -> matmul, O(S^2) memory) as the
baseline attnbench's figures are compared with. Prints one JSON object per
line, like attnbench. Needs Debian's python3-torch:

    /usr/bin/python3 core/bench/torch_eager.py --threads 2 --seqs 2048,4096
"""
import argparse
import json
import math
import time

import torch


def eager(q, k, v, scale, causal):
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if causal:
        n = s.shape[-1]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return torch.matmul(p, v)


def best_seconds(fn, min_seconds):
    best, total, runs = float("inf"), 0.0, 0
    while runs < 2 or total < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seqs", default="2048,4096")
    ap.add_argument("--dims", default="128")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--min_seconds", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for name in a.dtypes.split(","):
        for s in map(int, a.seqs.split(",")):
            for d in map(int, a.dims.split(",")):
                for causal in map(int, a.causal.split(",")):
                    shape = (1, a.heads, s, d)
                    q, k, v = (torch.randn(shape, dtype=dtypes[name]) for _ in range(3))
                    scale = 1.0 / math.sqrt(d)
                    flops = 4.0 * a.heads * s * s * d
                    fwd = best_seconds(
                        lambda: eager(q, k, v, scale, causal), a.min_seconds)
                    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
                    dy = torch.randn(shape, dtype=dtypes[name])

                    def backward():
                        out = eager(qg, kg, vg, scale, causal)
                        out.backward(dy)

                    fwd_bwd = best_seconds(backward, a.min_seconds)
                    bwd = max(fwd_bwd - fwd, 1e-9)
                    for direction, sec, fl in (("forward", fwd, flops),
                                               ("backward", bwd, 2.5 * flops)):
                        print(json.dumps({
                            "kind": "torch_eager", "direction": direction,
                            "dtype": name, "b": 1, "n": a.heads, "s": s,
                            "d": d, "causal": bool(causal),
                            "threads": a.threads, "seconds": round(sec, 6),
                            "gflops_dense": round(fl / sec / 1e9, 2),
                            "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
