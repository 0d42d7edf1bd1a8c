#!/usr/bin/env python3
"""End-to-end wire benchmark: attnctl against real attnserve processes.

For each server binary given (e.g. a build before and after a change), starts
it on a loopback port, runs the shapes of the wire's performance table with
`attnctl --repeat N`, and reports, per case, the best warm call's
round_trip_s, compute_s and queue_s, the wire time (round trip - compute -
queue), compute/e2e, and the request+response bytes over the wire time.
Beside them, measured in the same run by this script: a warm memcpy rate and
raw-socket rates (TCP loopback and a unix socket, one stream, one process
each side), so that every figure can be read as a ratio.

  scripts/wire-bench.py --attnctl build/client/attnctl \\
      --server before=/path/old/attnserve --server after=build/server/attnserve
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

CASES = [
    # name, attnctl args, request MB, response MB
    ("fwd fp32 B1 N8 S4096 D128", "forward --dtype fp32 -b 1 -n 8 -s 4096 -d 128"),
    ("fwd bf16 B1 N8 S4096 D128", "forward --dtype bf16 -b 1 -n 8 -s 4096 -d 128"),
    ("bwd fp32 B1 N8 S4096 D128", "backward --dtype fp32 -b 1 -n 8 -s 4096 -d 128"),
    ("bwd bf16 B1 N8 S4096 D128", "backward --dtype bf16 -b 1 -n 8 -s 4096 -d 128"),
    ("fwd fp32 Sq16384 Skv1 N8 D128",
     "forward --dtype fp32 -b 1 -n 8 --sq 16384 --skv 1 -d 128"),
    ("decode bf16 Sq1 Skv32768 N32/8 D128",
     "forward --dtype bf16 -b 1 -n 32 --kv_heads 8 --sq 1 --skv 32768 -d 128"),
    ("decode bf16 Sq16 Skv32768 N32/8 D128",
     "forward --dtype bf16 -b 1 -n 32 --kv_heads 8 --sq 16 --skv 32768 -d 128"),
]


def memcpy_rate(mb=256, reps=5):
    src = bytearray(os.urandom(1 << 20)) * mb
    dst = bytearray(len(src))
    memoryview(dst)[:] = src  # warm
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        memoryview(dst)[:] = src
        best = max(best, len(src) / (time.perf_counter() - t))
    return best


def socket_rate(family, mb=256, reps=3):
    """One stream of `mb` MB, sender and receiver threads in one process
    (the GIL is released in send/recv), receive buffer reused."""
    chunk = bytearray(1 << 20) * 4
    total = mb << 20
    with tempfile.TemporaryDirectory() as tmp:
        if family == socket.AF_UNIX:
            addr = os.path.join(tmp, "s")
        else:
            addr = ("127.0.0.1", 0)
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind(addr)
        srv.listen(1)
        addr = srv.getsockname()
        best = 0.0
        for _ in range(reps):
            done = {}

            def recv():
                conn, _ = srv.accept()
                buf = bytearray(8 << 20)
                view = memoryview(buf)
                got = 0
                while got < total:
                    n = conn.recv_into(view)
                    if n == 0:
                        break
                    got += n
                done["t"] = time.perf_counter()
                conn.close()

            th = threading.Thread(target=recv)
            th.start()
            cli = socket.socket(family, socket.SOCK_STREAM)
            cli.connect(addr)
            t = time.perf_counter()
            sent = 0
            mv = memoryview(chunk)
            while sent < total:
                cli.sendall(mv)
                sent += len(chunk)
            cli.close()
            th.join()
            best = max(best, sent / (done["t"] - t))
        srv.close()
    return best


def run_attnctl(attnctl, target, args, repeat):
    out = subprocess.run([attnctl] + args.split() +
                         ["--target", target, "--repeat", str(repeat),
                          "--timeout", "10m"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None, out.stderr[-400:]
    runs = []
    for m in re.finditer(r"run (\d+)/\d+: round_trip_s=([\d.]+) "
                         r"compute_s=([\d.]+) queue_s=([\d.]+)", out.stdout):
        runs.append(tuple(float(m.group(i)) for i in (2, 3, 4)))
    return runs, out.stdout


def tensor_bytes(stdout):
    """Bytes of the outputs attnctl printed (shape x dtype size)."""
    sizes = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2}
    total = 0
    for m in re.finditer(r"shape=\[([\d,]+)\] dtype=(\w+)", stdout):
        n = 1
        for d in m.group(1).split(","):
            n *= int(d)
        total += n * sizes.get(m.group(2), 4)
    return total


def start_server(binary, port, unix_path=None):
    listen = f"unix:{unix_path}" if unix_path else f"127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--listen={listen}"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if unix_path:
                s = socket.socket(socket.AF_UNIX)
                s.connect(unix_path)
                s.close()
            else:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{binary} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attnctl", required=True)
    ap.add_argument("--server", action="append", required=True,
                    help="label=path of an attnserve binary")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--cases", default="", help="regex of case names")
    ap.add_argument("--unix", action="store_true",
                    help="serve and call over a unix socket, not TCP")
    a = ap.parse_args()
    print(f"load: {os.getloadavg()}")
    mc = memcpy_rate()
    tcp = socket_rate(socket.AF_INET)
    unix = socket_rate(socket.AF_UNIX)
    print(f"same-run references: memcpy {mc/1e9:.2f} GB/s, "
          f"tcp loopback {tcp/1e9:.2f} GB/s, unix socket {unix/1e9:.2f} GB/s")
    port = 50960
    for spec in a.server:
        label, binary = spec.split("=", 1)
        port += 1
        unix_path = f"/tmp/wire-bench-{os.getpid()}-{port}.sock" \
            if a.unix else None
        target = f"unix:{unix_path}" if a.unix else f"127.0.0.1:{port}"
        proc = start_server(binary, port, unix_path)
        try:
            for name, args in CASES:
                if a.cases and not re.search(a.cases, name):
                    continue
                runs, stdout = run_attnctl(a.attnctl, target, args, a.repeat)
                if not runs:
                    print(f"{label:8} {name:38} FAILED {stdout}")
                    continue
                # Warm calls: from the second on; best = least wire time.
                warm = runs[1:] or runs
                rt, cs, qs = min(warm, key=lambda r: r[0] - r[1] - r[2])
                wire = max(rt - cs - qs, 1e-9)
                print(f"{label:8} {name:38} round_trip_s={rt:.3f} "
                      f"compute_s={cs:.3f} wire_s={wire:.3f} "
                      f"compute/e2e={cs/rt:.2f} "
                      f"out_MB={tensor_bytes(stdout)/1e6:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait()
            if unix_path and os.path.exists(unix_path):
                os.unlink(unix_path)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
