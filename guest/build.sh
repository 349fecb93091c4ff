#!/usr/bin/env bash
# Build the default flintvm x86_64 guest: Linux 6.1 (vmlinux + bzImage) from
# Debian's linux-source-6.1 and a busybox initramfs.
#
#   bash guest/build.sh [--force]     build if needed; print the output dir
#   bash guest/build.sh --print-key   print the cache key only
#
# Results are cached in ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/guest/x86_64-<key>/
# with vmlinux, bzImage, initramfs.cpio.gz and manifest.json. The key hashes
# everything the result depends on (see cache_key), so a cache hit is a no-op.
#
# The LAST (and only) line on stdout is the absolute output directory, so
# callers can do `dir=$(bash guest/build.sh)`. Progress goes to stderr.
set -euo pipefail

# Everything this script and its children print goes to stderr; fd 3 is the
# real stdout, used once at the very end.
exec 3>&1 1>&2

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$GUEST_DIR/microvm-x86_64.config
INIT_SCRIPT=$GUEST_DIR/init
SELF=$GUEST_DIR/build.sh

ARCH=x86_64
KSRC_PKG=linux-source-6.1
KSRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
BB_PKG=busybox-static
BUSYBOX=/bin/busybox
# Everything the build needs, as Debian packages.
DEPS=("$KSRC_PKG" "$BB_PKG" build-essential flex bison bc libelf-dev libssl-dev
      lz4 cpio xz-utils gzip binutils)
OUTPUTS=(vmlinux bzImage initramfs.cpio.gz manifest.json)

CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
BUILD_ROOT=$CACHE/build
MAKE_LOG=$BUILD_ROOT/kernel-make.log

T0=$SECONDS

log() { printf '[guest] %s\n' "$*" >&2; }
die() { printf '[guest] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local s=$((SECONDS - T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
phase() { log "$1 (elapsed $(elapsed))"; }

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$SELF" >&2
}

FORCE=0
PRINT_KEY=0
for a in "$@"; do
    case $a in
        --force) FORCE=1 ;;
        --print-key) PRINT_KEY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $a" ;;
    esac
done

# ------------------------------------------------------------------ packages

# Installed version of a Debian package, or nothing.
pkg_version() {
    local v
    v=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 0
    case $v in ii*) printf '%s' "${v#*|}" ;; esac
}

# Install whichever of DEPS are missing (apt-get update only if needed).
ensure_deps() {
    local missing=() p
    local st
    for p in "${DEPS[@]}"; do
        st=$(dpkg -s "$p" 2>/dev/null) || st=
        case $st in *"Status: install ok installed"*) ;; *) missing+=("$p") ;; esac
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    phase "installing missing packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q || die "apt-get update failed"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "apt-get install failed: ${missing[*]}"
}

# ------------------------------------------------------------------ cache key

KSRC_VER=$(pkg_version "$KSRC_PKG")
BB_VER=$(pkg_version "$BB_PKG")
if [ -z "$KSRC_VER" ] || [ -z "$BB_VER" ]; then
    ensure_deps
    KSRC_VER=$(pkg_version "$KSRC_PKG")
    BB_VER=$(pkg_version "$BB_PKG")
    [ -n "$KSRC_VER" ] && [ -n "$BB_VER" ] || die "$KSRC_PKG / $BB_PKG still not installed"
fi

cache_key() {
    {
        printf 'flintvm guest %s\n' "$ARCH"
        local f
        for f in "$FRAGMENT" "$SELF" "$INIT_SCRIPT"; do
            printf '\n== %s\n' "${f##*/}"
            cat "$f"
        done
        printf '\n== %s %s\n== %s %s\n' "$KSRC_PKG" "$KSRC_VER" "$BB_PKG" "$BB_VER"
    } | sha256sum | cut -c1-16
}
KEY=$(cache_key)

if [ "$PRINT_KEY" = 1 ]; then
    printf '%s\n' "$KEY" >&3
    exit 0
fi

OUT_DIR=$CACHE/guest/$ARCH-$KEY

complete() {
    local f
    for f in "${OUTPUTS[@]}"; do [ -s "$1/$f" ] || return 1; done
}

finish() {
    printf '%s\n' "$OUT_DIR" >&3
    exit 0
}

if [ "$FORCE" = 0 ] && complete "$OUT_DIR"; then
    finish
fi

# ------------------------------------------------------------------ lock
# One build at a time per cache (the kernel build tree is shared). A second
# invocation waits, then finds the finished result.

mkdir -p "$CACHE/guest" "$BUILD_ROOT"
exec 9>"$BUILD_ROOT/.lock"
if ! flock -n 9; then
    phase "waiting for another guest build to finish (lock $BUILD_ROOT/.lock)"
    flock 9
fi
if [ "$FORCE" = 0 ] && complete "$OUT_DIR"; then
    log "built by another invocation"
    finish
fi

ensure_deps
[ -f "$KSRC_TARBALL" ] || die "$KSRC_TARBALL missing (package $KSRC_PKG)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package $BB_PKG)"

STAGE=$(mktemp -d "$CACHE/guest/.tmp-$ARCH-$KEY.XXXXXX")
MAKE_PID=
cleanup() {
    if [ -n "$MAKE_PID" ]; then kill "$MAKE_PID" 2>/dev/null || true; fi
    rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building $ARCH guest, key $KEY ($KSRC_PKG $KSRC_VER, $BB_PKG $BB_VER)"

# ------------------------------------------------------------------ kernel source
# Unpacked once into $BUILD_ROOT and reused; the object tree (O=) is separate
# so rebuilds after a config change are incremental.

KSRC=$BUILD_ROOT/$KSRC_PKG
KOBJ=$BUILD_ROOT/kernel-$ARCH
STAMP=".flintvm-source-version"

if [ "$(cat "$KSRC/$STAMP" 2>/dev/null)" != "$KSRC_VER" ]; then
    phase "kernel: unpacking $KSRC_TARBALL"
    rm -rf "$KSRC" "$KOBJ" "$BUILD_ROOT"/.unpack.*
    unpack=$(mktemp -d "$BUILD_ROOT/.unpack.XXXXXX")
    tar -xf "$KSRC_TARBALL" -C "$unpack"
    [ -f "$unpack/$KSRC_PKG/Makefile" ] || die "unexpected layout in $KSRC_TARBALL"
    printf '%s\n' "$KSRC_VER" >"$unpack/$KSRC_PKG/$STAMP"
    mv "$unpack/$KSRC_PKG" "$KSRC"
    rmdir "$unpack"
fi
mkdir -p "$KOBJ"

kmake() { make -C "$KSRC" O="$KOBJ" ARCH="$ARCH" "$@"; }

show_log_tail() {
    log "last 40 lines of $MAKE_LOG:"
    tail -n 40 "$MAKE_LOG" >&2 || true
}

# ------------------------------------------------------------------ kernel config

phase "kernel: config (tinyconfig + $(basename "$FRAGMENT"))"
: >"$MAKE_LOG"
{
    kmake tinyconfig &&
    "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$KOBJ" "$KOBJ/.config" "$FRAGMENT" &&
    kmake olddefconfig
} >>"$MAKE_LOG" 2>&1 || { show_log_tail; die "kernel configuration failed"; }

# Every option the fragment sets must have survived olddefconfig.
verify_config() {
    local cfg=$KOBJ/.config bad=0 line sym val
    while IFS= read -r line; do
        case $line in
            CONFIG_*=*)
                sym=${line%%=*} val=${line#*=}
                if [ "$val" = n ]; then
                    if grep -q "^$sym=" "$cfg"; then
                        log "config: $sym should be off but is $(grep "^$sym=" "$cfg")"; bad=1
                    fi
                elif ! grep -qxF "$line" "$cfg"; then
                    log "config: $sym=$val requested but .config has: $(grep -E "^(# )?$sym[= ]" "$cfg" || echo 'nothing (dependency not met)')"
                    bad=1
                fi ;;
            "# CONFIG_"*" is not set")
                sym=${line#\# } sym=${sym%% *}
                if grep -q "^$sym=" "$cfg"; then
                    log "config: $sym should be off but is $(grep "^$sym=" "$cfg")"; bad=1
                fi ;;
        esac
    done <"$FRAGMENT"
    return $bad
}
verify_config || die "kernel config check failed: options above were dropped or changed by olddefconfig (see $KOBJ/.config)"

# ------------------------------------------------------------------ kernel build

phase "kernel: make -j$(nproc) bzImage vmlinux (log $MAKE_LOG)"
# In the background (without our stdout pipe or the lock fd) so we can report
# progress while it runs.
kmake -j"$(nproc)" bzImage vmlinux >>"$MAKE_LOG" 2>&1 </dev/null 3>&- 9>&- &
MAKE_PID=$!
last_beat=$SECONDS
while kill -0 "$MAKE_PID" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - last_beat)) -ge 20 ]; then
        last_beat=$SECONDS
        last=$(tail -n 30 "$MAKE_LOG" 2>/dev/null |
               sed -n 's/^ *\(CC\|AS\|LD\|AR\|HOSTCC\|OBJCOPY\|LZ4\|GEN\)[^ ]* *//p' | tail -n 1) || last=
        log "kernel: make (elapsed $(elapsed))${last:+ ... $last}"
    fi
done
if ! wait "$MAKE_PID"; then
    MAKE_PID=
    show_log_tail
    die "kernel build failed (full log: $MAKE_LOG)"
fi
MAKE_PID=
KVERSION=$(cat "$KOBJ/include/config/kernel.release")
[ -n "$KVERSION" ] || die "could not read the kernel release"

phase "kernel: built Linux $KVERSION; collecting vmlinux and bzImage"
cp "$KOBJ/vmlinux" "$STAGE/vmlinux"
cp "$KOBJ/arch/x86/boot/bzImage" "$STAGE/bzImage"
if command -v strip >/dev/null; then
    strip --strip-debug "$STAGE/vmlinux"
fi
# The PVH entry note (Xen owner, type 0x12 = XEN_ELFNOTE_PHYS32_ENTRY) must be present.
notes=$(readelf -W -n "$STAGE/vmlinux") || die "readelf -n vmlinux failed"
if ! grep -qiE '^[[:space:]]*Xen[[:space:]].*(0x0*12\)|PHYS32)' <<<"$notes"; then
    printf '%s\n' "$notes" >&2
    die "vmlinux has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
fi

# ------------------------------------------------------------------ initramfs

phase "initramfs: busybox $BB_VER"
ROOTFS=$STAGE/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,etc,root,mnt}
mkdir -m 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/root"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
chmod 0755 "$ROOTFS/bin/busybox"
# The equivalent of `busybox --install -s`, done here on the host.
"$BUSYBOX" --list-full | while IFS= read -r applet; do
    case $applet in */*) ;; *) continue ;; esac   # e.g. "linuxrc": not wanted
    [ -e "$ROOTFS/$applet" ] || [ -L "$ROOTFS/$applet" ] && continue
    mkdir -p "$ROOTFS/${applet%/*}"
    ln -s /bin/busybox "$ROOTFS/$applet"
done
install -m 0755 "$INIT_SCRIPT" "$ROOTFS/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$ROOTFS/etc/group"
printf 'flintvm\n' >"$ROOTFS/etc/hostname"
cat >"$ROOTFS/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
PS1='flintvm:\w\$ '
EOF

# newc archive from a file list; -R 0:0 makes everything root-owned without
# needing root here. No device nodes: /init mounts devtmpfs.
(cd "$ROOTFS" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet) | gzip -9 -n >"$STAGE/initramfs.cpio.gz"
rm -rf "$ROOTFS"

# ------------------------------------------------------------------ manifest + publish

printf '{"kernelVersion":"%s","key":"%s","built":"%s","arch":"%s","linuxSource":"%s","busybox":"%s"}\n' \
    "$KVERSION" "$KEY" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ARCH" "$KSRC_VER" "$BB_VER" \
    >"$STAGE/manifest.json"

complete "$STAGE" || die "internal error: staged outputs incomplete"
chmod 0755 "$STAGE"
if [ -e "$OUT_DIR" ]; then
    old=$(mktemp -d "$CACHE/guest/.old-$ARCH-$KEY.XXXXXX")
    mv "$OUT_DIR" "$old/"
    mv "$STAGE" "$OUT_DIR"
    rm -rf "$old"
else
    mv "$STAGE" "$OUT_DIR"
fi
trap - EXIT

phase "done: $OUT_DIR ($(du -sh "$OUT_DIR" | cut -f1))"
finish
