#!/usr/bin/env bash
# Build the default flintvm guest: Linux 6.1 from Debian's linux-source-6.1
# and a busybox initramfs, plus a tools initramfs (the busybox one with
# socat, fio, iperf3 and attr from Debian appended; see tools.list).
# x86_64 (the default): vmlinux + bzImage. arm64: Image, cross-built with
# Debian's gcc-aarch64-linux-gnu; busybox and the tools from the arm64
# Debian packages.
#
#   bash guest/build.sh [--arch x86_64|arm64] [--force]   build if needed; print the output dir
#   bash guest/build.sh [--arch x86_64|arm64] --print-key print the cache key only
#
# Results are cached in ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/guest/<arch>-<key>/:
# x86_64 with vmlinux, bzImage, initramfs.cpio.gz, initramfs-tools.cpio.gz and
# manifest.json; arm64 with Image, initramfs.cpio.gz, initramfs-tools.cpio.gz
# and manifest.json. The kernel is cached on its own, in
# guest/kernel-<arch>-<kernel key>/, keyed only by what it is built from
# (kernel.sh, the config fragment, the linux-source and compiler versions;
# see kernel_key), and hard-linked (or copied) into the output directory, so
# a change to this script, the init script or the tools rebuilds only the
# initramfs archives. The output key hashes the kernel key and everything
# the archives depend on (see cache_key); a cache hit is a no-op.
#
# The LAST (and only) line on stdout is the absolute output directory, so
# callers can do `dir=$(bash guest/build.sh)`. Progress goes to stderr.
set -euo pipefail

# Everything this script and its children print goes to stderr; fd 3 is the
# real stdout, used once at the very end.
exec 3>&1 1>&2

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SCRIPT=$GUEST_DIR/init
SELF=$GUEST_DIR/build.sh
KERNEL_SH=$GUEST_DIR/kernel.sh
TOOLS_LIST=$GUEST_DIR/tools.list

KSRC_PKG=linux-source-6.1
KSRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
BB_PKG=busybox-static
BUSYBOX=/bin/busybox
# Every file of both initramfs archives gets this mtime (and cpio renumbers
# inodes), so the archives are byte-identical for the same inputs.
ARCHIVE_MTIME=@0

CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
BUILD_ROOT=$CACHE/build

T0=$SECONDS

# (Both architectures may build at once, so each line says which one.)
log() { printf '[guest %s] %s\n' "${ARCH:-}" "$*" >&2; }
die() { printf '[guest %s] ERROR: %s\n' "${ARCH:-}" "$*" >&2; exit 1; }
elapsed() { local s=$((SECONDS - T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
phase() { log "$1 (elapsed $(elapsed))"; }

usage() {
    sed -n '2,24s/^# \{0,1\}//p' "$SELF" >&2
}

FORCE=0
PRINT_KEY=0
ARCH=x86_64
while [ $# -gt 0 ]; do
    case $1 in
        --force) FORCE=1 ;;
        --print-key) PRINT_KEY=1 ;;
        --arch) [ $# -ge 2 ] || { usage; die "--arch needs a value: x86_64 or arm64"; }
                ARCH=$2; shift ;;
        --arch=*) ARCH=${1#--arch=} ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
    shift
done

# ------------------------------------------------------------------ per-architecture settings
# DEB_ARCH: the Debian architecture of the guest's busybox. When it is not
# this machine's (an arm64 guest built on amd64), busybox-static comes from
# the foreign-architecture package (apt-get download busybox-static:arm64).
# CROSS: the CROSS_COMPILE prefix for the kernel (Debian's native gcc on an
# arm64 machine has the same aarch64-linux-gnu-gcc name).
HOST_DEB_ARCH=$(dpkg --print-architecture)
case $ARCH in
    x86_64|amd64)
        ARCH=x86_64 DEB_ARCH=amd64
        FRAGMENT=$GUEST_DIR/microvm-x86_64.config
        CROSS= CC_PKG= KCC_PKG=gcc
        KTARGETS=(bzImage vmlinux)
        KERNEL_FILES=(vmlinux bzImage)
        OUTPUTS=(vmlinux bzImage initramfs.cpio.gz initramfs-tools.cpio.gz initramfs-bench.cpio.gz manifest.json)
        MAKE_LOG=$BUILD_ROOT/kernel-make.log
        [ "$HOST_DEB_ARCH" = amd64 ] || die "the x86_64 guest is built on an amd64 (x86_64) Debian machine; this one is $HOST_DEB_ARCH"
        ;;
    arm64|aarch64)
        ARCH=arm64 DEB_ARCH=arm64
        FRAGMENT=$GUEST_DIR/microvm-arm64.config
        CROSS=aarch64-linux-gnu-
        if [ "$HOST_DEB_ARCH" = arm64 ]; then CC_PKG=gcc; else CC_PKG=gcc-aarch64-linux-gnu; fi
        KCC_PKG=$CC_PKG
        KTARGETS=(Image)
        KERNEL_FILES=(Image)
        OUTPUTS=(Image initramfs.cpio.gz initramfs-tools.cpio.gz initramfs-bench.cpio.gz manifest.json)
        MAKE_LOG=$BUILD_ROOT/kernel-make-arm64.log
        ;;
    *) usage; die "unknown --arch $ARCH (x86_64 or arm64)" ;;
esac
# The guest's busybox is this machine's /bin/busybox, or a foreign one.
FOREIGN_BB=0
[ "$DEB_ARCH" = "$HOST_DEB_ARCH" ] || FOREIGN_BB=1
# Everything the build needs, as Debian packages. (A foreign busybox still
# needs the native busybox-static: its applet directories come from there.)
DEPS=("$KSRC_PKG" "$BB_PKG" build-essential flex bison bc libelf-dev libssl-dev
      lz4 cpio xz-utils gzip binutils)
[ -z "$CC_PKG" ] || DEPS+=("$CC_PKG")

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
CC_VER=
[ -z "$CC_PKG" ] || CC_VER=$(pkg_version "$CC_PKG")
if [ -z "$KSRC_VER" ] || [ -z "$BB_VER" ] || { [ -n "$CC_PKG" ] && [ -z "$CC_VER" ]; }; then
    ensure_deps
    KSRC_VER=$(pkg_version "$KSRC_PKG")
    BB_VER=$(pkg_version "$BB_PKG")
    [ -z "$CC_PKG" ] || CC_VER=$(pkg_version "$CC_PKG")
    [ -n "$KSRC_VER" ] && [ -n "$BB_VER" ] || die "$KSRC_PKG / $BB_PKG still not installed"
    [ -z "$CC_PKG" ] || [ -n "$CC_VER" ] || die "$CC_PKG still not installed"
fi

apt_stamp() {
    { ls -l --time-style=+%s /var/lib/apt/lists/ /etc/apt/sources.list* 2>/dev/null; sha256sum <"$TOOLS_LIST"; } |
        sha256sum | cut -c1-32
}

# ------------------------------------------------------------------ foreign busybox: version
# busybox-static:$DEB_ARCH at apt's candidate version (memoized like the tools
# closure below). dpkg must know the foreign architecture for apt to list it:
# add it (as root) and apt-get update when it does not.
HOST_BB_VER=
if [ "$FOREIGN_BB" = 1 ]; then
    HOST_BB_VER=$BB_VER
    foreign_bb_version() {
        apt-cache show --no-all-versions "$BB_PKG:$DEB_ARCH" 2>/dev/null |
            awk '/^Version: / { print $2; exit }'
    }
    # foreign_bb_memo: the memoized version, or nothing.
    foreign_bb_memo() {
        local memo=$CACHE/guest/.busybox-$DEB_ARCH stamp out
        mkdir -p "$CACHE/guest"
        stamp=$(apt_stamp)
        if [ -f "$memo" ] && [ "$(head -n1 "$memo")" = "$stamp" ]; then
            tail -n +2 "$memo"
            return 0
        fi
        out=$(foreign_bb_version)
        [ -n "$out" ] || return 0
        printf '%s\n%s\n' "$stamp" "$out" >"$memo.$$" && mv "$memo.$$" "$memo"
        printf '%s\n' "$out"
    }
    BB_VER=$(foreign_bb_memo)
    if [ -z "$BB_VER" ]; then
        [ "$(id -u)" -eq 0 ] || die "apt knows no $BB_PKG:$DEB_ARCH; as root run: dpkg --add-architecture $DEB_ARCH && apt-get update"
        export DEBIAN_FRONTEND=noninteractive
        if ! dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH"; then
            log "dpkg --add-architecture $DEB_ARCH (for $BB_PKG:$DEB_ARCH)"
            dpkg --add-architecture "$DEB_ARCH" || die "dpkg --add-architecture $DEB_ARCH failed"
        fi
        log "apt knows no $BB_PKG:$DEB_ARCH: apt-get update"
        apt-get update -q >&2 || die "apt-get update failed"
        BB_VER=$(foreign_bb_memo)
        [ -n "$BB_VER" ] || die "apt has no candidate version of $BB_PKG:$DEB_ARCH"
    fi
fi

# ------------------------------------------------------------------ tools: package closure
# tools.list names Debian packages and the programs to take from them. Their
# libraries come from the Depends/Pre-Depends closure of those packages
# (first alternative; virtual packages and `exclude`d names not followed),
# at the versions apt would install now, for the guest's Debian architecture
# (PKG:arm64 for an arm64 guest built on amd64). That closure, with
# versions, is part of the cache key. Walking it takes a few seconds of
# apt-cache, so the answer is memoized while the apt lists and tools.list
# are unchanged.

[ -f "$TOOLS_LIST" ] || die "$TOOLS_LIST missing"
TOOL_PKGS=()
TOOL_PROGS=()
BENCH_PROGS=()
TOOL_EXCL=' '
while read -r first rest; do
    into=TOOL_PROGS
    if [ "$first" = bench ]; then
        # `bench <package> <program>...`: in initramfs-bench.cpio.gz only
        into=BENCH_PROGS
        read -r first rest <<<"$rest"
    fi
    case $first in
        ''|'#'*) ;;
        exclude) for w in $rest; do TOOL_EXCL+="$w "; done ;;
        *) TOOL_PKGS+=("$first")
           for w in $rest; do
               case $w in /*) eval "$into+=(\"\$w\")" ;; *) die "tools.list: program path must be absolute: $w" ;; esac
           done ;;
    esac
done <"$TOOLS_LIST"
[ ${#TOOL_PKGS[@]} -gt 0 ] || die "tools.list names no package"

# APT_Q: the architecture qualifier apt needs for the guest's packages.
APT_Q=
[ "$FOREIGN_BB" = 0 ] || APT_Q=":$DEB_ARCH"

# Prints "package version" lines, sorted: the closure at the candidate
# versions; for a foreign architecture "package version architecture" (an
# Architecture: all package is downloaded without the :arm64 qualifier). apt
# shows a foreign package's dependency on an Architecture: all package as a
# virtual <name:arch> provided by name: that one is followed too.
tools_closure() {
    local -A seen=()
    local level=("${TOOL_PKGS[@]/%/$APT_Q}") new p
    while [ ${#level[@]} -gt 0 ]; do
        new=()
        for p in "${level[@]}"; do
            [ -n "${seen[$p]:-}" ] || { seen[$p]=1; new+=("$p"); }
        done
        [ ${#new[@]} -gt 0 ] || break
        mapfile -t level < <(
            apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
                --no-replaces --no-enhances "${new[@]}" 2>/dev/null |
            awk -v excl="$TOOL_EXCL" '
                function take(n,  b) { sub(/:any$/, "", n); b = n; sub(/:.*/, "", b)
                                       if (n !~ /^</ && index(excl, " " b " ") == 0) print n }
                function dep(n) { virt = ""
                                  if (n ~ /^</) { virt = n; gsub(/^<|>$/, "", virt); sub(/:.*/, "", virt) } else take(n) }
                /^[^ ]/                 { alt = 0; virt = ""; next }
                /^  \|(Pre)?Depends: /  { if (!alt) dep($2); alt = 1; next }
                /^  (Pre)?Depends: /    { if (!alt) dep($2); alt = 0; next }
                /^    [^ ]/             { if (virt != "" && $1 == virt) { take($1); virt = "" } next }
                                        { virt = "" }' |
            LC_ALL=C sort -u)
    done
    apt-cache show --no-all-versions "${!seen[@]}" 2>/dev/null |
        awk -v foreign="$APT_Q" '
            function out() { if (p != "") { if (foreign != "") print p, v, a; else print p, v }; p = "" }
            /^Package: / { p = $2 } /^Version: / { v = $2 } /^Architecture: / { a = $2 }
            /^$/ { out() } END { out() }' | LC_ALL=C sort -u
}

# The memoized closure, computed (and apt-get update'd, as root, if apt
# knows none of the packages) when needed.
tools_versions() {
    # (The memo file is per format of this output and per architecture.)
    local memo=$CACHE/guest/.tools-closure2-$DEB_ARCH stamp out p
    mkdir -p "$CACHE/guest"
    stamp=$(apt_stamp)
    if [ -f "$memo" ] && [ "$(head -n1 "$memo")" = "$stamp" ]; then
        tail -n +2 "$memo"
        return 0
    fi
    if ! apt-cache show --no-all-versions "${TOOL_PKGS[@]/%/$APT_Q}" >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || die "apt does not know ${TOOL_PKGS[*]}; run apt-get update (as root)"
        log "apt does not know ${TOOL_PKGS[*]}: apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
        stamp=$(apt_stamp)
    fi
    log "tools: resolving the package closure of ${TOOL_PKGS[*]} ($DEB_ARCH)"
    out=$(tools_closure)
    for p in "${TOOL_PKGS[@]}"; do
        grep -q "^$p " <<<"$out" || die "tools: apt has no candidate version of $p"
    done
    printf '%s\n%s\n' "$stamp" "$out" >"$memo.$$" && mv "$memo.$$" "$memo"
    printf '%s\n' "$out"
}
TOOLS_VERSIONS=$(tools_versions)

# The kernel's key: only what the kernel is built from. (Not this script,
# the init script or the initramfs inputs: see kernel.sh.)
KCC_VER=$(pkg_version "$KCC_PKG")
[ -n "$KCC_VER" ] || { ensure_deps; KCC_VER=$(pkg_version "$KCC_PKG"); }
[ -n "$KCC_VER" ] || die "$KCC_PKG still not installed"
kernel_key() {
    {
        printf 'flintvm guest kernel %s\n' "$ARCH"
        local f
        for f in "$FRAGMENT" "$KERNEL_SH"; do
            printf '\n== %s\n' "${f##*/}"
            cat "$f"
        done
        printf '\n== %s %s\n== %s %s\n' "$KSRC_PKG" "$KSRC_VER" "$KCC_PKG" "$KCC_VER"
    } | sha256sum | cut -c1-16
}
KKEY=$(kernel_key)
KERNEL_DIR=$CACHE/guest/kernel-$ARCH-$KKEY

# The output's key: the kernel's, and everything the initramfs archives and
# the assembly depend on.
cache_key() {
    {
        printf 'flintvm guest %s\n== kernel %s\n' "$ARCH" "$KKEY"
        local f
        for f in "$SELF" "$INIT_SCRIPT" "$TOOLS_LIST"; do
            printf '\n== %s\n' "${f##*/}"
            cat "$f"
        done
        printf '\n== %s %s\n' "$BB_PKG" "$BB_VER"
        printf '\n== tools closure\n%s\n' "$TOOLS_VERSIONS"
        [ "$FOREIGN_BB" = 0 ] || printf '== %s:%s %s (applet directories)\n' "$BB_PKG" "$HOST_DEB_ARCH" "$HOST_BB_VER"
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
# One build at a time per cache and architecture (each has its own kernel
# object tree; kernel.sh takes a second lock to unpack the shared source). A
# second invocation for the same architecture waits, then finds the finished
# result.

mkdir -p "$CACHE/guest" "$BUILD_ROOT"
exec 9>"$BUILD_ROOT/.lock-$ARCH"
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
[ -z "$CROSS" ] || command -v "${CROSS}gcc" >/dev/null || die "${CROSS}gcc missing (package $CC_PKG)"

STAGE=$(mktemp -d "$CACHE/guest/.tmp-$ARCH-$KEY.XXXXXX")
MAKE_PID=
cleanup() {
    if [ -n "$MAKE_PID" ]; then kill "$MAKE_PID" 2>/dev/null || true; fi
    rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bb_label=$BB_PKG; [ "$FOREIGN_BB" = 0 ] || bb_label+=":$DEB_ARCH"
log "building $ARCH guest, key $KEY, kernel key $KKEY ($KSRC_PKG $KSRC_VER, $bb_label $BB_VER${CC_PKG:+, $CC_PKG $CC_VER})"

# ------------------------------------------------------------------ kernel (cached on its own)
# kernel.sh builds it into a scratch directory, which becomes $KERNEL_DIR;
# its files are then hard-linked (copied across file systems) into the
# output. A kernel directory of another key is left alone (another
# checkout may use it).

kernel_complete() {
    local f
    for f in "${KERNEL_FILES[@]}" release; do [ -s "$KERNEL_DIR/$f" ] || return 1; done
}
if [ "$FORCE" = 1 ] || ! kernel_complete; then
    # shellcheck source=guest/kernel.sh
    . "$KERNEL_SH"
    KSTAGE=$STAGE/kernel
    mkdir -p "$KSTAGE"
    build_kernel "$KSTAGE"
    chmod 0755 "$KSTAGE"
    rm -rf "$KERNEL_DIR.old"
    [ ! -e "$KERNEL_DIR" ] || mv "$KERNEL_DIR" "$KERNEL_DIR.old"
    mv "$KSTAGE" "$KERNEL_DIR"
    rm -rf "$KERNEL_DIR.old"
else
    phase "kernel: cached in $KERNEL_DIR"
fi
KVERSION=$(cat "$KERNEL_DIR/release")
for f in "${KERNEL_FILES[@]}"; do
    ln "$KERNEL_DIR/$f" "$STAGE/$f" 2>/dev/null || cp "$KERNEL_DIR/$f" "$STAGE/$f"
done

# ------------------------------------------------------------------ initramfs: busybox
# busybox-static:$DEB_ARCH (apt-get download into $BUILD_ROOT/debs-$DEB_ARCH,
# kept; other versions are pruned), unpacked with dpkg-deb -x. It cannot run
# here, so its applet list (`busybox --list-full`) is made up from its own
# table of applet names -- the NUL-separated, sorted string list that starts
# "[" "[[" -- and the directory this machine's busybox-static installs the
# same applet to (/bin for one it does not have). Debian builds both from the
# same configuration, so in practice the two lists name the same applets.

# The applets /init uses; the build fails if the guest's busybox lacks one.
INIT_APPLETS=(sh mount mkdir hostname nproc grep uname base64 sync reboot poweroff sleep setsid cttyhack dd)
[ "$ARCH" != arm64 ] || INIT_APPLETS+=(devmem)

GUEST_BB=$BUSYBOX
if [ "$FOREIGN_BB" = 1 ]; then
    phase "busybox: $BB_PKG:$DEB_ARCH $BB_VER"
    BB_DEBS=$BUILD_ROOT/debs-$DEB_ARCH
    mkdir -p "$BB_DEBS"
    bb_deb=$BB_DEBS/${BB_PKG}_${BB_VER//:/%3a}_$DEB_ARCH.deb
    if [ ! -s "$bb_deb" ]; then
        log "apt-get download $BB_PKG:$DEB_ARCH=$BB_VER into $BB_DEBS"
        dl=$(mktemp -d "$BUILD_ROOT/.dl.XXXXXX")
        chmod 0777 "$dl"    # apt's _apt sandbox user writes there when we run as root
        sandbox=(); [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
        (cd "$dl" && apt-get download -q "${sandbox[@]}" "$BB_PKG:$DEB_ARCH=$BB_VER" >&2) ||
            { rm -rf "$dl"; die "apt-get download $BB_PKG:$DEB_ARCH=$BB_VER failed"; }
        f=$(ls "$dl"/*.deb 2>/dev/null | head -n1)
        [ -n "$f" ] || { rm -rf "$dl"; die "apt-get download $BB_PKG:$DEB_ARCH gave no .deb"; }
        mv "$f" "$bb_deb"
        rm -rf "$dl"
    fi
    for f in "$BB_DEBS"/*.deb; do [ "$f" = "$bb_deb" ] || rm -f "$f"; done
    dpkg-deb -x "$bb_deb" "$STAGE/bbroot"
    GUEST_BB=$STAGE/bbroot/bin/busybox
    [ -f "$GUEST_BB" ] || die "$bb_deb has no /bin/busybox"
    case $ARCH in arm64) want_machine=aarch64 ;; *) want_machine=$ARCH ;; esac
    file_out=$(readelf -h "$GUEST_BB" | sed -n 's/^ *Machine: *//p')
    case $file_out in *AArch64*) [ "$want_machine" = aarch64 ] ;; *X86-64*) [ "$want_machine" = x86_64 ] ;; *) false ;; esac ||
        die "$bb_deb: /bin/busybox is for '$file_out', not $ARCH"
fi

# The applet list, as `busybox --list-full` prints it.
applet_list() {
    if [ "$FOREIGN_BB" = 0 ]; then
        "$GUEST_BB" --list-full
        return
    fi
    local off
    off=$(LC_ALL=C grep -m1 -obUaP '\x5b\x00\x5b\x5b\x00' "$GUEST_BB" | cut -d: -f1)
    [ -n "$off" ] || die "no applet name table (\"[\" \"[[\" ...) in $BB_PKG:$DEB_ARCH's busybox"
    # Names in strictly increasing order from there (64 KiB is plenty); the
    # table ends where that stops. (Every stage reads all its input: no
    # SIGPIPE under pipefail.)
    dd if="$GUEST_BB" bs=4096 skip=$((off / 4096)) count=17 2>/dev/null | tail -c +$((off % 4096 + 1)) | tr '\0' '\n' |
        LC_ALL=C awk 'stop { next } (NR > 1 && !($0 > prev)) || $0 !~ /^[][a-z0-9_.-]+$/ { stop = 1; next }
                      { print; prev = $0 }' |
        LC_ALL=C awk 'NR == FNR { n = $0; sub(/.*\//, "", n); if (n != "") dir[n] = $0; next }
                      { print ($0 in dir) ? dir[$0] : "bin/" $0 }' <("$BUSYBOX" --list-full) -
}
APPLETS=$(applet_list)
[ "$(wc -l <<<"$APPLETS")" -ge 100 ] || die "the guest's busybox lists only $(wc -l <<<"$APPLETS") applets"
for a in "${INIT_APPLETS[@]}"; do
    grep -qE "(^|/)$a\$" <<<"$APPLETS" || die "the guest's busybox ($BB_PKG $BB_VER) has no '$a' applet, which /init uses"
done

phase "initramfs: busybox $BB_VER"
umask 022
ROOTFS=$STAGE/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,etc,root,mnt}
mkdir -m 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/root"
cp "$GUEST_BB" "$ROOTFS/bin/busybox"
chmod 0755 "$ROOTFS/bin/busybox"
# The equivalent of `busybox --install -s`, done here on the host.
printf '%s\n' "$APPLETS" | while IFS= read -r applet; do
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

# newc archive of a directory, gzip -6, reproducible: sorted names, -R 0:0
# (root-owned without needing root here), one fixed mtime, renumbered inodes,
# no device numbers (--reproducible), gzip -n. No device nodes: /init mounts
# devtmpfs.
make_cpio_gz() { # make_cpio_gz DIR OUT
    find "$1" -exec touch -h -d "$ARCHIVE_MTIME" {} +
    (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -6 -n >"$2"
}
make_cpio_gz "$ROOTFS" "$STAGE/initramfs.cpio.gz"
rm -rf "$ROOTFS" "$STAGE/bbroot"

# ------------------------------------------------------------------ tools initramfs
# initramfs-tools.cpio.gz = initramfs.cpio.gz followed by a second gzip'd
# newc archive with the tools.list programs, their libraries and the ELF
# interpreter. Linux unpacks concatenated (compressed) archives in order into
# one rootfs, so the default archive stays as it is and small.
#
# Everything comes from Debian packages (apt-get download, dpkg-deb -x into
# a scratch root), never from this machine's /lib. For this machine's
# architecture the scratch root's own ld.so lists each program's libraries
# with --library-path pointing at the scratch root only; a foreign one
# (arm64 built on amd64) cannot run here, so its DT_NEEDED entries are
# followed with readelf and looked up the way its loader would (see
# foreign_libs). Either way every library must resolve inside the scratch
# root.

phase "tools initramfs: $(printf '%s ' "${TOOL_PKGS[@]}")($(wc -l <<<"$TOOLS_VERSIONS") packages with dependencies)"
# (Per architecture: other versions are pruned from it below.)
DEBS=$BUILD_ROOT/debs${APT_Q:+-tools-$DEB_ARCH}
TROOT=$STAGE/tools-debroot
TOOLFS=$STAGE/tools-rootfs
mkdir -p "$DEBS" "$TROOT" "$TOOLFS"

deb_of() { # deb_of PKG VERSION: the cached .deb, or nothing
    local f
    for f in "$DEBS/${1}_${2//:/%3a}_"*.deb; do [ -f "$f" ] && { printf '%s' "$f"; return 0; }; done
    return 0
}
want=()
while read -r p v a; do
    q=$APT_Q; [ "$a" != all ] || q=
    [ -n "$(deb_of "$p" "$v")" ] || want+=("$p$q=$v")
done <<<"$TOOLS_VERSIONS"
if [ ${#want[@]} -gt 0 ]; then
    log "tools: apt-get download ${#want[@]} packages into $DEBS"
    dl=$(mktemp -d "$BUILD_ROOT/.dl.XXXXXX")
    chmod 0777 "$dl"    # apt's _apt sandbox user writes there when we run as root
    sandbox=(); [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
    (cd "$dl" && apt-get download -q "${sandbox[@]}" "${want[@]}" >&2) || { rm -rf "$dl"; die "apt-get download failed: ${want[*]}"; }
    mv "$dl"/*.deb "$DEBS/"
    rmdir "$dl"
fi

# Extract every package into the scratch root; remember which package owns
# which path, for the copyright files and the manifest.
OWNERS=$STAGE/tools-owners
: >"$OWNERS"
keep=()
while read -r p v _; do
    deb=$(deb_of "$p" "$v")
    [ -n "$deb" ] || die "tools: $p $v was not downloaded"
    keep+=("$deb")
    dpkg-deb -x "$deb" "$TROOT"
    dpkg-deb -c "$deb" | awk -v p="$p" '{ f = $6; sub(/^\./, "", f); if (f != "/") print f " " p }' >>"$OWNERS"
done <<<"$TOOLS_VERSIONS"
chmod -R u+w "$TROOT"    # some package directories are read-only; keep the scratch root removable
# Drop cached .debs of other versions.
for f in "$DEBS"/*.deb; do
    case " ${keep[*]} " in *" $f "*) ;; *) rm -f "$f" ;; esac
done

# Resolve symlinks of an absolute path inside the scratch root (absolute
# link targets are taken as relative to it); prints the resolved guest path.
in_root() {
    local p=$1 t n=0
    while [ -L "$TROOT$p" ]; do
        t=$(readlink "$TROOT$p")
        case $t in /*) p=$t ;; *) p=${p%/*}/$t ;; esac
        n=$((n + 1))
        [ $n -lt 40 ] || die "tools: symlink loop at $1"
    done
    realpath -m -s "$p"
}
owner_of() { awk -v f="$1" '$1 == f { print $2; exit }' "$OWNERS"; }

# Two sets, each its own archive: `tools` (the tests' programs) and `bench`
# (tools.list's `bench` lines: fio, whose libraries -- ceph, glusterfs, ICU --
# are most of the bytes). A bench program's files that the tools set already
# has are not repeated. CUR_SET/CUR_FS say which set is being filled.
BENCHFS=$STAGE/bench-rootfs
mkdir -p "$BENCHFS"
CUR_SET=tools CUR_FS=$TOOLFS

# guest path -> copy it (a regular file) from the scratch root into the
# current set, and note the package.
declare -A TOOL_FILES=() TOOL_OWNERS=() BENCH_OWNERS=()
add_tool_file() {
    local g=$1 real pkg
    [ -n "${TOOL_FILES[$g]:-}" ] && return 0
    real=$(in_root "$g")
    [ -f "$TROOT$real" ] || die "tools: $g is not a file in the packages"
    pkg=$(owner_of "$real")
    [ -n "$pkg" ] || die "tools: no package owns $real"
    mkdir -p "$CUR_FS${g%/*}"
    cp "$TROOT$real" "$CUR_FS$g"
    TOOL_FILES[$g]=$CUR_SET
    if [ "$CUR_SET" = tools ]; then TOOL_OWNERS[$pkg]=1; else BENCH_OWNERS[$pkg]=1; fi
}

# foreign_libs PROG: `ldd`-style "NAME => PATH" lines for a program of the
# guest's (foreign) architecture: its DT_NEEDED entries, recursively, each
# searched for as the loader does -- the needing object's DT_RPATH and
# DT_RUNPATH ($ORIGIN expanded), then /lib/<triplet>, /usr/lib/<triplet>,
# /lib, /usr/lib -- in the scratch root. PATH is "not" when none has it.
foreign_libs() {
    local -A done=()
    local queue=("$1") obj n d found dirs rp
    local triplet
    case $DEB_ARCH in arm64) triplet=aarch64-linux-gnu ;; amd64) triplet=x86_64-linux-gnu ;; *) die "tools: no multiarch triplet for $DEB_ARCH" ;; esac
    while [ ${#queue[@]} -gt 0 ]; do
        obj=${queue[0]}
        queue=("${queue[@]:1}")
        rp=$(readelf -d "$TROOT$obj" 2>/dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]$/\2/p' | tr ':' ' ')
        dirs=()
        for d in $rp; do dirs+=("${d//\$ORIGIN/${obj%/*}}"); done
        dirs+=("/lib/$triplet" "/usr/lib/$triplet" /lib /usr/lib)
        for n in $(readelf -d "$TROOT$obj" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
            [ -z "${done[$n]:-}" ] || continue
            found=not
            for d in "${dirs[@]}"; do
                # (in_root: a link's absolute target is inside the scratch root)
                if [ -f "$TROOT$(in_root "$d/$n")" ]; then found=$d/$n; break; fi
            done
            done[$n]=$found
            if [ "$found" = not ]; then
                printf '%s => not found\n' "$n"
            else
                printf '%s => %s (0)\n' "$n" "$TROOT$found"
                queue+=("$(in_root "$found")")
            fi
        done
    done
}

LIBPATH=$(find "$TROOT" \( -type f -o -type l \) -name '*.so*' -printf '%h\n' | LC_ALL=C sort -u | paste -sd:)
add_program() { # add_program PROG: the program, its interpreter and its libraries, into the current set
    local prog=$1 interp ldso listing name arrow path
    [ -f "$TROOT$prog" ] && [ ! -L "$TROOT$prog" ] || die "tools: $prog is not a program in ${TOOL_PKGS[*]}"
    add_tool_file "$prog"
    interp=$(readelf -l "$TROOT$prog" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [ -n "$interp" ] || return 0    # static: nothing to resolve
    ldso=$(in_root "$interp")
    [ -x "$TROOT$ldso" ] || die "tools: $prog wants the interpreter $interp, which is not in the packages"
    add_tool_file "$ldso"
    if [ "$ldso" != "$interp" ] && [ -z "${TOOL_FILES[$interp]:-}" ]; then
        mkdir -p "$CUR_FS${interp%/*}"
        ln -s "$ldso" "$CUR_FS$interp"
        TOOL_FILES[$interp]=$CUR_SET
    fi
    # What ldd prints, from the scratch root's loader and libraries only.
    if [ "$FOREIGN_BB" = 1 ]; then
        listing=$(foreign_libs "$prog")
    else
        listing=$("$TROOT$ldso" --library-path "$LIBPATH" --list "$TROOT$prog") ||
            die "tools: $ldso --list $prog failed: $listing"
    fi
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue     # linux-vdso.so.1, the interpreter itself
        case $path in
            not) die "tools: $prog needs $name, which no package in the closure has (add its package to tools.list?)" ;;
            "$TROOT"/*) add_tool_file "$(realpath -m -s "${path#"$TROOT"}")" ;;
            *) die "tools: $prog's $name resolved outside the packages, to $path (add its package to tools.list?)" ;;
        esac
    done <<<"$listing"
}
for prog in "${TOOL_PROGS[@]}"; do add_program "$prog"; done
CUR_SET=bench CUR_FS=$BENCHFS
for prog in "${BENCH_PROGS[@]}"; do add_program "$prog"; done

# The Debian copyright file of every package something was taken from
# (identical ones as symlinks to the first: boost's is 2 MB), and the list of
# those packages with their versions, in each set's archive.
declare -A COPYRIGHT_BY_SUM=()
copyrights() { # copyrights ROOT LIST PKG...: into ROOT, and the "package version" lines into ROOT/usr/share/flintvm/LIST
    local root=$1 list=$2 pkg c sum
    shift 2
    mkdir -p "$root/usr/share/flintvm"
    for pkg in $(printf '%s\n' "$@" | LC_ALL=C sort); do
        c=$(in_root "/usr/share/doc/$pkg/copyright")
        if [ -f "$TROOT$c" ]; then
            mkdir -p "$root/usr/share/doc/$pkg"
            sum=$(sha256sum <"$TROOT$c" | cut -c1-64)
            if [ -n "${COPYRIGHT_BY_SUM[$sum]:-}" ]; then
                ln -s "../${COPYRIGHT_BY_SUM[$sum]}/copyright" "$root/usr/share/doc/$pkg/copyright"
            else
                cp "$TROOT$c" "$root/usr/share/doc/$pkg/copyright"
                COPYRIGHT_BY_SUM[$sum]=$pkg
            fi
        fi
        grep "^$pkg " <<<"$TOOLS_VERSIONS"
    done >"$root/usr/share/flintvm/$list"
}
copyrights "$TOOLFS" tools-packages.txt "${!TOOL_OWNERS[@]}"
bench_only=()
for pkg in "${!BENCH_OWNERS[@]}"; do [ -n "${TOOL_OWNERS[$pkg]:-}" ] || bench_only+=("$pkg"); done
copyrights "$BENCHFS" bench-packages.txt "${bench_only[@]}"

make_cpio_gz "$TOOLFS" "$STAGE/tools.cpio.gz"
make_cpio_gz "$BENCHFS" "$STAGE/bench.cpio.gz"
cat "$STAGE/initramfs.cpio.gz" "$STAGE/tools.cpio.gz" >"$STAGE/initramfs-tools.cpio.gz"
cat "$STAGE/initramfs-tools.cpio.gz" "$STAGE/bench.cpio.gz" >"$STAGE/initramfs-bench.cpio.gz"
log "tools: $(wc -l <"$TOOLFS/usr/share/flintvm/tools-packages.txt") packages, $(du -sh --apparent-size "$TOOLFS" | cut -f1) unpacked, $(du -h --apparent-size "$STAGE/tools.cpio.gz" | cut -f1) gzip'd; bench (fio): $(wc -l <"$BENCHFS/usr/share/flintvm/bench-packages.txt") more packages, $(du -sh --apparent-size "$BENCHFS" | cut -f1) more unpacked, $(du -h --apparent-size "$STAGE/bench.cpio.gz" | cut -f1) gzip'd"
rm -rf "$TROOT" "$TOOLFS" "$BENCHFS" "$OWNERS" "$STAGE/tools.cpio.gz" "$STAGE/bench.cpio.gz"

# ------------------------------------------------------------------ manifest + publish

tools_json=$(for p in "${TOOL_PKGS[@]}"; do grep "^$p " <<<"$TOOLS_VERSIONS"; done |
    awk '{ printf "%s\"%s\":\"%s\"", (NR > 1 ? "," : ""), $1, $2 }')
compiler_json=
[ -z "$CC_PKG" ] || compiler_json=$(printf ',"compiler":"%s"' "$CC_PKG $CC_VER")
printf '{"kernelVersion":"%s","key":"%s","kernelKey":"%s","built":"%s","arch":"%s","linuxSource":"%s","busybox":"%s"%s,"tools":{%s}}\n' \
    "$KVERSION" "$KEY" "$KKEY" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ARCH" "$KSRC_VER" "$BB_VER" "$compiler_json" "$tools_json" \
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
