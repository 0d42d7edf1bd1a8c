#!/usr/bin/env bash
# Figures of resident tensors against a real attnserve process on loopback
# (docs/performance.md, "Resident tensors"): a backward by handles against
# the backward that sends everything, a decode-like forward with K/V
# resident, and a PutTensor + GetTensor round trip of a large tensor.
#
#   scripts/bench-resident.sh [build_dir] [big_tensor_gib]
#
# big_tensor_gib (default 3) sizes the upload/download test; 0 skips it.
# ATTNSERVE_BENCH_ONLY_BIG=1 runs only that test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
gib=${2:-3}
attnctl=$build/client/attnctl
port=${ATTNSERVE_BENCH_PORT:-50077}
target=127.0.0.1:$port
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

"$build/server/attnserve" --listen="$target" --workers=1 \
  --max_tensor_elements=$((1 << 31)) --log_level=warn >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do "$attnctl" health --target="$target" >/dev/null 2>&1 && break; sleep 0.1; done

echo "host: $(nproc) cpus; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
value() { sed -n "s/^$1: //p" | head -1; }

if [ -z "${ATTNSERVE_BENCH_ONLY_BIG:-}" ]; then
echo "== backward B1 N8 S4096 D128 fp32: everything sent vs. by handles (only dy)"
shape=(-b 1 -n 8 -s 4096 -d 128 --dtype fp32 --layout BNSD --seed 3)
"$attnctl" backward --target="$target" "${shape[@]}" --repeat 3 >"$work/full.txt"
"$attnctl" backward --target="$target" "${shape[@]}" --repeat 3 --resident >"$work/res.txt"
for f in full res; do
  rb=$(value request_bytes <"$work/$f.txt"); c=$(value compute_s <"$work/$f.txt")
  rt=$(value round_trip_s <"$work/$f.txt")
  echo "$f: request_bytes=$rb compute_s=$c round_trip_s=$rt compute/round_trip=$(awk "BEGIN{printf \"%.3f\", $c/$rt}")"
done
awk -v a="$(value request_bytes <"$work/res.txt")" -v b="$(value request_bytes <"$work/full.txt")" \
  'BEGIN{printf "request bytes by handles / everything sent = %.4f\n", a/b}'
for g in dq dk dv; do
  if [ "$(grep "^$g:" "$work/full.txt")" = "$(grep "^$g:" "$work/res.txt")" ]; then
    echo "$g: identical sums"; else echo "$g: DIFFERENT"; fi
done

echo "== decode-like forward: Sq 1, Skv 32768, N 32, 8 kv heads, D 128, bf16, K/V resident"
"$attnctl" forward --target="$target" -b 1 -n 32 --kv_heads 8 --sq 1 --skv 32768 -d 128 \
  --dtype bf16 --resident --repeat 5 >"$work/decode.txt"
c=$(value compute_s <"$work/decode.txt"); rt=$(value round_trip_s <"$work/decode.txt")
echo "decode: request_bytes=$(value request_bytes <"$work/decode.txt") compute_s=$c round_trip_s=$rt round_trip/compute=$(awk "BEGIN{printf \"%.3f\", $rt/$c}")"

fi
if [ "$gib" != 0 ]; then
  echo "== PutTensor + GetTensor of $gib GiB (fp32)"
  elems=$((gib * 268435456))
  head -c $((elems * 4)) /dev/urandom >"$work/big.bin"
  sum_in=$(sha256sum <"$work/big.bin" | cut -d' ' -f1)
  rss_before=$(awk '/VmRSS/{print $2}' /proc/$server/status)
  "$attnctl" put --target="$target" --dtype fp32 --shape $elems --input "$work/big.bin" \
    --ttl 600 >"$work/put.txt"
  handle=$(value handle <"$work/put.txt")
  "$attnctl" get --target="$target" "$handle" --output "$work/back.bin" >"$work/get.txt"
  sum_out=$(sha256sum <"$work/back.bin" | cut -d' ' -f1)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$server/status)
  "$attnctl" rm --target="$target" "$handle" >/dev/null
  echo "put: $(value put_s <"$work/put.txt") s, $(value mb_per_s <"$work/put.txt") MB/s"
  echo "get: $(value get_s <"$work/get.txt") s, $(value mb_per_s <"$work/get.txt") MB/s"
  echo "checksums equal: $([ "$sum_in" = "$sum_out" ] && echo yes || echo NO)"
  awk -v h="$hwm" -v b="$rss_before" -v p=$((elems * 4)) \
    'BEGIN{printf "server peak RSS %.2f GiB (%.2f GiB before) = %.3f x payload\n", h/1048576, b/1048576, h*1024/p}'
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
