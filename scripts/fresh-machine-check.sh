#!/usr/bin/env bash
# Checks that the README's two set-up commands work on a fresh Debian 12
# machine: builds a minimal Debian 12 root with debootstrap, clones the
# committed HEAD into it and, inside chroot,
#   1. runs `scripts/serve.sh` exactly as the README writes it, waits until
#      `build/client/attnctl health` says SERVING, then stops the server;
#   2. runs `scripts/test.sh` (every test) unless --serve-only is given.
# Everything is torn down at the end, on failure too (--keep keeps the root).
#
#   scripts/fresh-machine-check.sh [--serve-only] [--keep] [--dir DIR]
#
# Needs root (debootstrap, mount, chroot). The Debian mirror is the one this
# machine's apt sources name; certificate authorities this machine added
# itself (/usr/local/share/ca-certificates) are trusted inside the root too,
# so that the root reaches the same registries through the same network.
# Environment: FRESH_SERVE_TIMEOUT (seconds until SERVING, default 3600; the
# installation and build took over 30 minutes on a busy 2-core machine).
set -euo pipefail

root_dir=$(cd "$(dirname "$0")/.." && pwd)
serve_only=0
keep=0
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --serve-only) serve_only=1 ;;
    --keep) keep=1 ;;
    --dir) work=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "fresh-machine-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "fresh-machine-check: $*"; }
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-machine-check: needs root (debootstrap, mount, chroot)" >&2
  exit 2
fi

# The first plain Debian archive of this machine's apt sources (one-line or
# deb822 form), not the security or updates suites.
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list
               /etc/apt/sources.list.d/*.sources)
  local f
  for f in "${files[@]}"; do
    [ -r "$f" ] || continue
    awk '
      /^[[:space:]]*deb[[:space:]]/ {
        for (i = 2; i <= NF; i++) if ($i !~ /^\[/) break
        if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit }
      }
      /^URIs:/ {
        for (i = 2; i <= NF; i++)
          if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit }
      }' "$f"
  done | head -n 1
}

start=$(date +%s)
mirror=$(debian_mirror)
if [ -z "$mirror" ]; then
  echo "fresh-machine-check: no Debian mirror in /etc/apt/sources.list*" >&2
  exit 2
fi
commit=$(git -C "$root_dir" rev-parse HEAD)

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    debootstrap >/dev/null
fi

if [ -z "$work" ]; then work=$(mktemp -d /var/tmp/attnserve-fresh.XXXXXX); fi
mkdir -p "$work"
chroot_dir=$work/root
serve_pid=""

# Unmounts everything below the root and removes it, whatever happened.
teardown() {
  local status=$?
  set +e
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" 2>/dev/null
    sleep 2
    kill -KILL "$serve_pid" 2>/dev/null
  fi
  # Processes still running inside the root (a test's server, nginx...).
  local pids
  pids=$(for p in /proc/[0-9]*; do
           [ "$(readlink "$p/root" 2>/dev/null)" = "$chroot_dir" ] && echo "${p#/proc/}"
         done)
  if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null; sleep 1; fi
  local m
  for m in dev/pts dev sys proc; do
    if mountpoint -q "$chroot_dir/$m"; then
      umount "$chroot_dir/$m" 2>/dev/null || umount -l "$chroot_dir/$m"
    fi
  done
  if [ "$keep" -eq 1 ]; then
    log "kept $chroot_dir"
  elif ! grep -q " $chroot_dir/" /proc/mounts; then
    rm -rf "$work"
  else
    log "something is still mounted below $chroot_dir; not removing it"
  fi
  log "finished in $(( $(date +%s) - start )) s with status $status"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

log "debootstrap bookworm (minbase) from $mirror into $chroot_dir"
debootstrap --variant=minbase bookworm "$chroot_dir" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; exit 1; }
log "root ready after $(( $(date +%s) - start )) s"

cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
# The installer writes /etc/hosts on every Debian machine; debootstrap does
# not, and without it "localhost" does not resolve inside the root.
if [[ ! -e "$chroot_dir/etc/hosts" ]]; then
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$chroot_dir/etc/hosts"
fi
# No services start inside the root (nginx's package would start one on the
# host's network otherwise).
printf '#!/bin/sh\nexit 101\n' >"$chroot_dir/usr/sbin/policy-rc.d"
chmod +x "$chroot_dir/usr/sbin/policy-rc.d"
# dpkg without an fsync per file, as container images commonly do: the root
# is thrown away, and the packages install in 60 % of the time. What gets
# installed is the same.
echo force-unsafe-io >"$chroot_dir/etc/dpkg/dpkg.cfg.d/unsafe-io"
extra_ca=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$chroot_dir/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$chroot_dir/usr/local/share/ca-certificates/"
  extra_ca=(NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
fi

mount -t proc proc "$chroot_dir/proc"
mount --rbind /sys "$chroot_dir/sys"
mount --make-rslave "$chroot_dir/sys"
mount --bind /dev "$chroot_dir/dev"
mount --bind /dev/pts "$chroot_dir/dev/pts"

git clone --quiet --no-hardlinks "$root_dir" "$chroot_dir/root/attnserve"
git -C "$chroot_dir/root/attnserve" checkout --quiet --detach "$commit"
log "cloned $commit"

# A new user's shell: a clean environment, root's home, the repository.
root_env=(env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
          LANG=C.UTF-8 TERM=dumb "${extra_ca[@]}")
in_root() {
  "${root_env[@]}" chroot "$chroot_dir" /bin/bash -c "cd /root/attnserve && $1"
}

log "README step 1: scripts/serve.sh"
serve_log=$work/serve.log
# A simple command, so that $! is the process that becomes the server.
"${root_env[@]}" chroot "$chroot_dir" /bin/bash -c \
  "cd /root/attnserve && exec scripts/serve.sh" >"$serve_log" 2>&1 &
serve_pid=$!
deadline=$(( $(date +%s) + ${FRESH_SERVE_TIMEOUT:-3600} ))
until in_root "build/client/attnctl health 2>/dev/null" 2>/dev/null | grep -q SERVING; do
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    log "scripts/serve.sh exited before the server was SERVING; its log ends:"
    tail -n 30 "$serve_log"
    exit 1
  fi
  if [ "$(date +%s)" -gt "$deadline" ]; then
    log "the server was not SERVING within ${FRESH_SERVE_TIMEOUT:-3600} s; log ends:"
    tail -n 30 "$serve_log"
    exit 1
  fi
  sleep 2
done
log "attnctl health: SERVING after $(( $(date +%s) - start )) s"
grep -E '^(install-deps: installed|build.sh: built)' "$serve_log" | sed 's/^/fresh-machine-check: /' || true
kill -TERM "$serve_pid"
wait "$serve_pid" || { log "the server did not exit cleanly on SIGTERM"; tail -n 20 "$serve_log"; exit 1; }
serve_pid=""
log "server stopped"

if [ "$serve_only" -eq 0 ]; then
  log "README step 2: scripts/test.sh"
  if ! in_root "scripts/test.sh" >"$work/test.log" 2>&1; then
    log "scripts/test.sh failed; its log ends:"
    tail -n 60 "$work/test.log"
    exit 1
  fi
  grep -E '^[0-9]+% tests passed|^Total Test time|^(test.sh|GoogleTest|ctest): ' "$work/test.log" |
    sed 's/^/fresh-machine-check: /'
  log "README step 2 passed after $(( $(date +%s) - start )) s"
fi
log "the README's commands work on a fresh Debian 12"
