#!/usr/bin/env bash
# Builds the flintvm guest agent (a static musl binary) and an initramfs
# whose /init is the agent, plus busybox for the processes it runs.
#
#   bash guest/agent/build.sh [--arch x86_64]   prints progress on stderr and
#                                              the output directory last on stdout
#
# Output: ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/agent/<arch>-<key>/ with
#   flintvm-agent          the static binary
#   initramfs-agent.cpio.gz  /init = the agent; /bin/busybox and its applets
# The key hashes the agent's sources, this script, the compiler's version and
# busybox's bytes; a cache hit is a no-op. Needs musl-tools (installed with
# apt-get when missing and run as root), busybox-static, cpio and gzip.
set -euo pipefail

ARCH=x86_64
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=${2:?--arch needs a value}; shift ;;
        --arch=*) ARCH=${1#--arch=} ;;
        *) echo "build.sh: unknown argument $1 (usage: build.sh [--arch x86_64])" >&2; exit 2 ;;
    esac
    shift
done
if [ "$ARCH" != x86_64 ] || [ "$(uname -m)" != x86_64 ]; then
    echo "build.sh: only --arch x86_64 on an x86_64 machine is supported so far (asked: $ARCH on $(uname -m))" >&2
    exit 2
fi

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
log() { echo "agent/build.sh: $*" >&2; }

need=()
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build.sh: missing ${need[*]}: install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi
BUSYBOX=/bin/busybox

SOURCES=(protocol.h agent.h main.c spawn.c)
KEY=$( {
    for f in "${SOURCES[@]}"; do echo "== $f"; cat "$HERE/$f"; done
    echo "== build.sh"; cat "$HERE/build.sh"
    echo "== cc"; musl-gcc --version | head -1
    echo "== busybox"; sha256sum <"$BUSYBOX"
} | sha256sum | cut -c1-16)
OUT=$CACHE/agent/$ARCH-$KEY
if [ -f "$OUT/initramfs-agent.cpio.gz" ] && [ -x "$OUT/flintvm-agent" ]; then
    log "cached: $OUT"
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE/agent"
STAGE=$(mktemp -d "$CACHE/agent/.stage-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
CFLAGS=(-static -Os -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -ffunction-sections -fdata-sections -Wl,--gc-sections -s)
log "compiling the agent (musl-gcc ${CFLAGS[*]})"
srcs=()
for f in "${SOURCES[@]}"; do case $f in *.c) srcs+=("$HERE/$f") ;; esac; done
musl-gcc "${CFLAGS[@]}" -o "$STAGE/flintvm-agent" "${srcs[@]}"

ROOT=$STAGE/root
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,root,etc}
chmod 1777 "$ROOT/tmp"
cp "$STAGE/flintvm-agent" "$ROOT/init"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    case $applet in busybox|init|linuxrc) continue ;; esac
    ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
# Reproducible: sorted names, owner 0:0, one mtime, no device nodes (the agent mounts devtmpfs).
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$STAGE/initramfs-agent.cpio.gz"
rm -rf "$ROOT"
size=$(stat -c %s "$STAGE/flintvm-agent")
log "agent: $size bytes; initramfs: $(stat -c %s "$STAGE/initramfs-agent.cpio.gz") bytes"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
trap - EXIT
echo "$OUT"
