#!/usr/bin/env python3
"""End-to-end wire benchmark: attnctl against real attnserve processes.

For each server binary given (e.g. a build before and after a change), starts
it on a loopback port, runs the shapes of the wire's performance table with
`attnctl --repeat N`, and reports, per case, the best warm call's
round_trip_s, compute_s and queue_s, the wire time (round trip - compute -
queue), compute/e2e, and the wire time over its floor: the call's request
and response bytes at the same-run raw TCP rate. With --payloads it also
times PutTensor and GetTensor of 16, 64 and 256 MB (`attnctl put/get
--repeat N`): the MB/s of each direction and its share of the raw TCP rate.
Beside them, measured in the same run by this script: a warm memcpy rate and
raw-socket rates (TCP loopback and a unix socket, one stream, sender and
receiver threads), so that every figure can be read as a ratio. --rounds R
runs everything R times, servers interleaved, and keeps each figure's best,
so that a slow moment of a shared machine does not decide a comparison. The
raw rates are measured again before each server's turn and their best is
the reference (the strictest: a figure measured in a slow moment is still
divided by the fastest raw rate of the run). Exits 1 when a call failed.

  scripts/wire-bench.py --attnctl build/client/attnctl \\
      --server before=/path/old/attnserve --server after=build/server/attnserve
  # each server with its own attnctl:
  scripts/wire-bench.py --attnctl build/client/attnctl \\
      --server before=/old/attnserve --client before=/old/attnctl \\
      --server after=build/server/attnserve --rounds 3 --payloads
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


def socket_rate(family, mb=256, reps=5):
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


def report_number(stdout, key):
    m = re.search(r"^%s: (\d+)$" % key, stdout, re.M)
    return int(m.group(1)) if m else 0


def payload_rates(attnctl, target, mb, repeat):
    """Best put and get MB/s of `repeat` transfers of an `mb` MB tensor."""
    n = mb * (1 << 20) // 4
    put = subprocess.run([attnctl, "put", "--dtype", "fp32", "--shape", str(n),
                          "--repeat", str(repeat), "--target", target,
                          "--timeout", "10m"],
                         capture_output=True, text=True, check=False)
    rates = [float(x) for x in re.findall(r"^run \d+/\d+: put_s=[\d.]+ "
                                          r"mb_per_s=([\d.]+)", put.stdout,
                                          re.M)]
    handle = re.search(r"^handle: (\S+)", put.stdout, re.M)
    if put.returncode != 0 or not handle or not rates:
        return None, None
    get = subprocess.run([attnctl, "get", handle.group(1), "--repeat",
                          str(repeat), "--target", target, "--timeout", "10m"],
                         capture_output=True, text=True, check=False)
    got = [float(x) for x in re.findall(r"^run \d+/\d+: get_s=[\d.]+ "
                                        r"mb_per_s=([\d.]+)", get.stdout,
                                        re.M)]
    subprocess.run([attnctl, "rm", handle.group(1), "--target", target],
                   capture_output=True, check=False)
    # Warm transfers: from the second on.
    return max(rates[1:] or rates), max(got[1:] or got) if got else None


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
    ap.add_argument("--client", action="append", default=[],
                    help="label=path of the attnctl for that server's label "
                         "(default: --attnctl)")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cases", default="", help="regex of case names")
    ap.add_argument("--payloads", action="store_true",
                    help="also PutTensor/GetTensor MB/s (--payload_mb sizes)")
    ap.add_argument("--payload_mb", default="16,64,256",
                    help="the --payloads sizes, MB, comma-separated")
    ap.add_argument("--reference_mb", type=int, default=256,
                    help="bytes of each memcpy and raw-socket measurement, "
                         "MB (smaller only for a quick check)")
    ap.add_argument("--unix", action="store_true",
                    help="serve and call over a unix socket, not TCP")
    a = ap.parse_args()
    clients = dict(c.split("=", 1) for c in a.client)
    print(f"load: {os.getloadavg()}")
    refs = {"memcpy": 0.0, "tcp": 0.0, "unix": 0.0}

    def measure_references():
        mb = a.reference_mb
        now = {"memcpy": memcpy_rate(mb),
               "tcp": socket_rate(socket.AF_INET, mb),
               "unix": socket_rate(socket.AF_UNIX, mb)}
        for k, v in now.items():
            refs[k] = max(refs[k], v)
        print(f"references now: memcpy {now['memcpy']/1e9:.2f} GB/s, "
              f"tcp loopback {now['tcp']/1e9:.2f} GB/s, "
              f"unix socket {now['unix']/1e9:.2f} GB/s", flush=True)

    best = {}  # (label, case) -> (wire, rt, cs, bytes)
    rates = {}  # (label, mb) -> [put, get]
    failed = 0
    port = 50960
    for rnd in range(a.rounds):
        for spec in a.server:
            label, binary = spec.split("=", 1)
            attnctl = clients.get(label, a.attnctl)
            measure_references()
            port += 1
            unix_path = f"/tmp/wire-bench-{os.getpid()}-{port}.sock" \
                if a.unix else None
            target = f"unix:{unix_path}" if a.unix else f"127.0.0.1:{port}"
            proc = start_server(binary, port, unix_path)
            try:
                for name, args in CASES:
                    if a.cases and not re.search(a.cases, name):
                        continue
                    runs, stdout = run_attnctl(attnctl, target, args,
                                               a.repeat)
                    if not runs:
                        print(f"{label:8} {name:38} FAILED {stdout}")
                        failed += 1
                        continue
                    # Warm calls: from the second on; best = least wire time.
                    warm = runs[1:] or runs
                    rt, cs, qs = min(warm, key=lambda r: r[0] - r[1] - r[2])
                    wire = max(rt - cs - qs, 1e-9)
                    nbytes = (report_number(stdout, "request_bytes") +
                              report_number(stdout, "response_bytes"))
                    key = (label, name)
                    if key not in best or wire < best[key][0]:
                        best[key] = (wire, rt, cs, nbytes)
                if a.payloads:
                    for mb in (int(x) for x in a.payload_mb.split(",")):
                        put, get = payload_rates(attnctl, target, mb,
                                                 a.repeat)
                        if put is None or get is None:
                            print(f"{label:8} payload {mb} MiB FAILED")
                            failed += 1
                        r = rates.setdefault((label, mb), [0.0, 0.0])
                        r[0] = max(r[0], put or 0.0)
                        r[1] = max(r[1], get or 0.0)
            finally:
                proc.terminate()
                proc.wait()
                if unix_path and os.path.exists(unix_path):
                    os.unlink(unix_path)
        print(f"round {rnd + 1}/{a.rounds} done, load {os.getloadavg()}",
              flush=True)
    raw = refs["unix"] if a.unix else refs["tcp"]
    print(f"same-run references (best of the run): memcpy "
          f"{refs['memcpy']/1e9:.2f} GB/s, tcp loopback {refs['tcp']/1e9:.2f} "
          f"GB/s, unix socket {refs['unix']/1e9:.2f} GB/s")
    for (label, name), (wire, rt, cs, nbytes) in best.items():
        floor = nbytes / raw
        print(f"{label:8} {name:38} round_trip_s={rt:.3f} compute_s={cs:.3f} "
              f"wire_s={wire:.3f} compute/e2e={cs/rt:.2f} "
              f"MB={nbytes/1e6:.1f} floor_s={floor:.3f} "
              f"wire/floor={wire/floor:.2f}")
    for (label, mb), (put, get) in rates.items():
        print(f"{label:8} payload {mb:3} MiB: put {put:.0f} MB/s "
              f"({put*1e6/raw:.2f} of raw), get {get:.0f} MB/s "
              f"({get*1e6/raw:.2f} of raw)")
    print(f"load: {os.getloadavg()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
