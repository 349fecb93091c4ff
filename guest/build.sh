#!/usr/bin/env bash
# Build the default flintvm guest: Linux 6.1 from Debian's linux-source-6.1
# and a busybox initramfs. x86_64 (the default): vmlinux + bzImage, plus a
# tools initramfs (the busybox one with socat, fio and iperf3 from Debian
# appended; see tools.list). arm64: Image, cross-built with Debian's
# gcc-aarch64-linux-gnu, and busybox from busybox-static:arm64.
#
#   bash guest/build.sh [--arch x86_64|arm64] [--force]   build if needed; print the output dir
#   bash guest/build.sh [--arch x86_64|arm64] --print-key print the cache key only
#
# Results are cached in ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/guest/<arch>-<key>/:
# x86_64 with vmlinux, bzImage, initramfs.cpio.gz, initramfs-tools.cpio.gz and
# manifest.json; arm64 with Image, initramfs.cpio.gz and manifest.json. The key
# hashes everything the result depends on (see cache_key), so a cache hit is a
# no-op.
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

log() { printf '[guest] %s\n' "$*" >&2; }
die() { printf '[guest] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { local s=$((SECONDS - T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
phase() { log "$1 (elapsed $(elapsed))"; }

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "$SELF" >&2
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
        CROSS= CC_PKG=
        KTARGETS=(bzImage vmlinux)
        OUTPUTS=(vmlinux bzImage initramfs.cpio.gz initramfs-tools.cpio.gz manifest.json)
        MAKE_LOG=$BUILD_ROOT/kernel-make.log
        [ "$HOST_DEB_ARCH" = amd64 ] || die "the x86_64 guest is built on an amd64 (x86_64) Debian machine; this one is $HOST_DEB_ARCH"
        ;;
    arm64|aarch64)
        ARCH=arm64 DEB_ARCH=arm64
        FRAGMENT=$GUEST_DIR/microvm-arm64.config
        CROSS=aarch64-linux-gnu-
        if [ "$HOST_DEB_ARCH" = arm64 ]; then CC_PKG=gcc; else CC_PKG=gcc-aarch64-linux-gnu; fi
        KTARGETS=(Image)
        OUTPUTS=(Image initramfs.cpio.gz manifest.json)
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
# at the versions apt would install now. That closure, with versions, is
# part of the cache key. Walking it takes a few seconds of apt-cache, so the
# answer is memoized while the apt lists and tools.list are unchanged.

[ -f "$TOOLS_LIST" ] || die "$TOOLS_LIST missing"
TOOL_PKGS=()
TOOL_PROGS=()
TOOL_EXCL=' '
while read -r first rest; do
    case $first in
        ''|'#'*) ;;
        exclude) for w in $rest; do TOOL_EXCL+="$w "; done ;;
        *) TOOL_PKGS+=("$first")
           for w in $rest; do
               case $w in /*) TOOL_PROGS+=("$w") ;; *) die "tools.list: program path must be absolute: $w" ;; esac
           done ;;
    esac
done <"$TOOLS_LIST"
[ ${#TOOL_PKGS[@]} -gt 0 ] || die "tools.list names no package"

# Prints "package version" lines, sorted: the closure at the candidate versions.
tools_closure() {
    local -A seen=()
    local level=("${TOOL_PKGS[@]}") new p
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
                function take(n) { sub(/:any$/, "", n); if (n !~ /^</ && index(excl, " " n " ") == 0) print n }
                /^[^ ]/                 { alt = 0; next }
                /^  \|(Pre)?Depends: /  { if (!alt) take($2); alt = 1; next }
                /^  (Pre)?Depends: /    { if (!alt) take($2); alt = 0; next }' |
            LC_ALL=C sort -u)
    done
    apt-cache show --no-all-versions "${!seen[@]}" 2>/dev/null |
        awk '/^Package: / { p = $2 } /^Version: / { print p, $2 }' | LC_ALL=C sort -u
}

# The memoized closure, computed (and apt-get update'd, as root, if apt
# knows none of the packages) when needed.
tools_versions() {
    local memo=$CACHE/guest/.tools-closure stamp out p
    mkdir -p "$CACHE/guest"
    stamp=$(apt_stamp)
    if [ -f "$memo" ] && [ "$(head -n1 "$memo")" = "$stamp" ]; then
        tail -n +2 "$memo"
        return 0
    fi
    if ! apt-cache show --no-all-versions "${TOOL_PKGS[@]}" >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || die "apt does not know ${TOOL_PKGS[*]}; run apt-get update (as root)"
        log "apt does not know ${TOOL_PKGS[*]}: apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
        stamp=$(apt_stamp)
    fi
    log "tools: resolving the package closure of ${TOOL_PKGS[*]}"
    out=$(tools_closure)
    for p in "${TOOL_PKGS[@]}"; do
        grep -q "^$p " <<<"$out" || die "tools: apt has no candidate version of $p"
    done
    printf '%s\n%s\n' "$stamp" "$out" >"$memo.$$" && mv "$memo.$$" "$memo"
    printf '%s\n' "$out"
}
# The tools initramfs is built for x86_64 only.
TOOLS_VERSIONS=
[ "$ARCH" != x86_64 ] || TOOLS_VERSIONS=$(tools_versions)

cache_key() {
    {
        printf 'flintvm guest %s\n' "$ARCH"
        local f files=("$FRAGMENT" "$SELF" "$INIT_SCRIPT")
        [ "$ARCH" != x86_64 ] || files+=("$TOOLS_LIST")
        for f in "${files[@]}"; do
            printf '\n== %s\n' "${f##*/}"
            cat "$f"
        done
        printf '\n== %s %s\n== %s %s\n' "$KSRC_PKG" "$KSRC_VER" "$BB_PKG" "$BB_VER"
        if [ "$ARCH" = x86_64 ]; then
            printf '\n== tools closure\n%s\n' "$TOOLS_VERSIONS"
        else
            printf '== %s %s\n' "$CC_PKG" "$CC_VER"
            [ "$FOREIGN_BB" = 0 ] || printf '== %s:%s %s (applet directories)\n' "$BB_PKG" "$HOST_DEB_ARCH" "$HOST_BB_VER"
        fi
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
log "building $ARCH guest, key $KEY ($KSRC_PKG $KSRC_VER, $bb_label $BB_VER${CC_PKG:+, $CC_PKG $CC_VER})"

# ------------------------------------------------------------------ kernel source
# Unpacked once into $BUILD_ROOT and reused; the object tree (O=) is separate
# so rebuilds after a config change are incremental.

KSRC=$BUILD_ROOT/$KSRC_PKG
KOBJ=$BUILD_ROOT/kernel-$ARCH
STAMP=".flintvm-source-version"

if [ "$(cat "$KSRC/$STAMP" 2>/dev/null)" != "$KSRC_VER" ]; then
    phase "kernel: unpacking $KSRC_TARBALL"
    # (every architecture's object tree: they were built from the old source)
    rm -rf "$KSRC" "$BUILD_ROOT"/kernel-x86_64 "$BUILD_ROOT"/kernel-arm64 "$BUILD_ROOT"/.unpack.*
    unpack=$(mktemp -d "$BUILD_ROOT/.unpack.XXXXXX")
    tar -xf "$KSRC_TARBALL" -C "$unpack"
    [ -f "$unpack/$KSRC_PKG/Makefile" ] || die "unexpected layout in $KSRC_TARBALL"
    printf '%s\n' "$KSRC_VER" >"$unpack/$KSRC_PKG/$STAMP"
    mv "$unpack/$KSRC_PKG" "$KSRC"
    rmdir "$unpack"
fi
mkdir -p "$KOBJ"

kmake() { make -C "$KSRC" O="$KOBJ" ARCH="$ARCH" ${CROSS:+CROSS_COMPILE="$CROSS"} "$@"; }

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

phase "kernel: make -j$(nproc) ${KTARGETS[*]} (log $MAKE_LOG)"
# In the background (without our stdout pipe or the lock fd) so we can report
# progress while it runs.
kmake -j"$(nproc)" "${KTARGETS[@]}" >>"$MAKE_LOG" 2>&1 </dev/null 3>&- 9>&- &
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

if [ "$ARCH" = x86_64 ]; then
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
else
phase "kernel: built Linux $KVERSION; collecting Image"
cp "$KOBJ/arch/arm64/boot/Image" "$STAGE/Image"
# The arm64 boot header (Documentation/arm64/booting.rst): magic "ARM\x64" at
# 56; flags at 24, whose bits 1-2 give the page size (1 = 4K) and bit 3
# means "may be placed anywhere in RAM" (2 MiB aligned).
[ "$(head -c 60 "$STAGE/Image" | tail -c 4)" = 'ARMd' ] || die "arch/arm64/boot/Image has no arm64 boot header (magic ARM\\x64 at 56)"
flags=$(od -An -tu8 -j24 -N8 --endian=little "$STAGE/Image" | tr -d ' ')
[ $(( (flags >> 1) & 3 )) = 1 ] && [ $(( (flags >> 3) & 1 )) = 1 ] ||
    die "Image header flags $flags: expected 4K pages and physical placement anywhere"
fi

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

# newc archive of a directory, gzip -9, reproducible: sorted names, -R 0:0
# (root-owned without needing root here), one fixed mtime, renumbered inodes,
# no device numbers (--reproducible), gzip -n. No device nodes: /init mounts
# devtmpfs.
make_cpio_gz() { # make_cpio_gz DIR OUT
    find "$1" -exec touch -h -d "$ARCHIVE_MTIME" {} +
    (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$2"
}
make_cpio_gz "$ROOTFS" "$STAGE/initramfs.cpio.gz"
rm -rf "$ROOTFS" "$STAGE/bbroot"

if [ "$ARCH" = x86_64 ]; then

# ------------------------------------------------------------------ tools initramfs
# initramfs-tools.cpio.gz = initramfs.cpio.gz followed by a second gzip'd
# newc archive with the tools.list programs, their libraries and the ELF
# interpreter. Linux unpacks concatenated (compressed) archives in order into
# one rootfs, so the default archive stays as it is and small.
#
# Everything comes from Debian packages (apt-get download, dpkg-deb -x into
# a scratch root), never from this machine's /lib: the scratch root's own
# ld.so lists each program's libraries with --library-path pointing at the
# scratch root only, and every library must resolve inside it.

phase "tools initramfs: $(printf '%s ' "${TOOL_PKGS[@]}")($(wc -l <<<"$TOOLS_VERSIONS") packages with dependencies)"
DEBS=$BUILD_ROOT/debs
TROOT=$STAGE/tools-debroot
TOOLFS=$STAGE/tools-rootfs
mkdir -p "$DEBS" "$TROOT" "$TOOLFS"

deb_of() { # deb_of PKG VERSION: the cached .deb, or nothing
    local f
    for f in "$DEBS/${1}_${2//:/%3a}_"*.deb; do [ -f "$f" ] && { printf '%s' "$f"; return 0; }; done
    return 0
}
want=()
while read -r p v; do
    [ -n "$(deb_of "$p" "$v")" ] || want+=("$p=$v")
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
while read -r p v; do
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

# guest path -> copy it (a regular file) from the scratch root, and note the package.
declare -A TOOL_FILES=() TOOL_OWNERS=()
add_tool_file() {
    local g=$1 real pkg
    [ -n "${TOOL_FILES[$g]:-}" ] && return 0
    real=$(in_root "$g")
    [ -f "$TROOT$real" ] || die "tools: $g is not a file in the packages"
    pkg=$(owner_of "$real")
    [ -n "$pkg" ] || die "tools: no package owns $real"
    mkdir -p "$TOOLFS${g%/*}"
    cp "$TROOT$real" "$TOOLFS$g"
    TOOL_FILES[$g]=1
    TOOL_OWNERS[$pkg]=1
}

LIBPATH=$(find "$TROOT" \( -type f -o -type l \) -name '*.so*' -printf '%h\n' | LC_ALL=C sort -u | paste -sd:)
for prog in "${TOOL_PROGS[@]}"; do
    [ -f "$TROOT$prog" ] && [ ! -L "$TROOT$prog" ] || die "tools: $prog is not a program in ${TOOL_PKGS[*]}"
    add_tool_file "$prog"
    interp=$(readelf -l "$TROOT$prog" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [ -n "$interp" ] || continue    # static: nothing to resolve
    ldso=$(in_root "$interp")
    [ -x "$TROOT$ldso" ] || die "tools: $prog wants the interpreter $interp, which is not in the packages"
    add_tool_file "$ldso"
    if [ "$ldso" != "$interp" ] && [ ! -e "$TOOLFS$interp" ]; then
        mkdir -p "$TOOLFS${interp%/*}"
        ln -s "$ldso" "$TOOLFS$interp"
    fi
    # What ldd prints, from the scratch root's loader and libraries only.
    listing=$("$TROOT$ldso" --library-path "$LIBPATH" --list "$TROOT$prog") ||
        die "tools: $ldso --list $prog failed: $listing"
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue     # linux-vdso.so.1, the interpreter itself
        case $path in
            not) die "tools: $prog needs $name, which no package in the closure has (add its package to tools.list?)" ;;
            "$TROOT"/*) add_tool_file "$(realpath -m -s "${path#"$TROOT"}")" ;;
            *) die "tools: $prog's $name resolved outside the packages, to $path (add its package to tools.list?)" ;;
        esac
    done <<<"$listing"
done

# The Debian copyright file of every package something was taken from
# (identical ones as symlinks to the first: boost's is 2 MB), and the list of
# those packages with their versions.
mkdir -p "$TOOLFS/usr/share/flintvm"
declare -A COPYRIGHT_BY_SUM=()
for pkg in $(printf '%s\n' "${!TOOL_OWNERS[@]}" | LC_ALL=C sort); do
    c=$(in_root "/usr/share/doc/$pkg/copyright")
    if [ -f "$TROOT$c" ]; then
        mkdir -p "$TOOLFS/usr/share/doc/$pkg"
        sum=$(sha256sum <"$TROOT$c" | cut -c1-64)
        if [ -n "${COPYRIGHT_BY_SUM[$sum]:-}" ]; then
            ln -s "../${COPYRIGHT_BY_SUM[$sum]}/copyright" "$TOOLFS/usr/share/doc/$pkg/copyright"
        else
            cp "$TROOT$c" "$TOOLFS/usr/share/doc/$pkg/copyright"
            COPYRIGHT_BY_SUM[$sum]=$pkg
        fi
    fi
    grep "^$pkg " <<<"$TOOLS_VERSIONS"
done >"$TOOLFS/usr/share/flintvm/tools-packages.txt"

make_cpio_gz "$TOOLFS" "$STAGE/tools.cpio.gz"
cat "$STAGE/initramfs.cpio.gz" "$STAGE/tools.cpio.gz" >"$STAGE/initramfs-tools.cpio.gz"
log "tools: $(wc -l <"$TOOLFS/usr/share/flintvm/tools-packages.txt") packages, ${#TOOL_FILES[@]} files, $(du -sh --apparent-size "$TOOLFS" | cut -f1) unpacked, $(du -h --apparent-size "$STAGE/tools.cpio.gz" | cut -f1) gzip'd"
rm -rf "$TROOT" "$TOOLFS" "$OWNERS" "$STAGE/tools.cpio.gz"
fi # x86_64: tools initramfs

# ------------------------------------------------------------------ manifest + publish

if [ "$ARCH" = x86_64 ]; then
tools_json=$(for p in "${TOOL_PKGS[@]}"; do grep "^$p " <<<"$TOOLS_VERSIONS"; done |
    awk '{ printf "%s\"%s\":\"%s\"", (NR > 1 ? "," : ""), $1, $2 }')
printf '{"kernelVersion":"%s","key":"%s","built":"%s","arch":"%s","linuxSource":"%s","busybox":"%s","tools":{%s}}\n' \
    "$KVERSION" "$KEY" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ARCH" "$KSRC_VER" "$BB_VER" "$tools_json" \
    >"$STAGE/manifest.json"
else
printf '{"kernelVersion":"%s","key":"%s","built":"%s","arch":"%s","linuxSource":"%s","busybox":"%s","compiler":"%s"}\n' \
    "$KVERSION" "$KEY" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ARCH" "$KSRC_VER" "$BB_VER" "$CC_PKG $CC_VER" \
    >"$STAGE/manifest.json"
fi

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
