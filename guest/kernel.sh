# Sourced by guest/build.sh: the guest KERNEL build, and nothing else.
#
# This file is the part of the build that the kernel depends on: its cache
# key (kernel_key in build.sh) hashes this file, the config fragment, the
# linux-source version and the compiler's version -- not build.sh, not the
# init script and not the initramfs inputs, so changing those rebuilds only
# the initramfs archives.
#
# build_kernel DEST: configure and build Linux from $KSRC_TARBALL for $ARCH
# (tinyconfig + $FRAGMENT), check the result, and put into DEST the kernel
# files ($KERNEL_FILES: vmlinux + bzImage for x86_64, Image for arm64) and
# `release` (the kernel release string).
#
# Uses from build.sh: ARCH, KSRC_PKG, KSRC_TARBALL, KSRC_VER, BUILD_ROOT,
# FRAGMENT, CROSS, KTARGETS, MAKE_LOG, log, phase, die, elapsed; sets
# MAKE_PID while make runs (build.sh's cleanup kills it).

build_kernel() {
local STAGE=$1
# ------------------------------------------------------------------ kernel source
# Unpacked once into $BUILD_ROOT and reused; the object tree (O=) is separate
# so rebuilds after a config change are incremental.

KSRC=$BUILD_ROOT/$KSRC_PKG
KOBJ=$BUILD_ROOT/kernel-$ARCH
STAMP=".flintvm-source-version"

# (Both architectures' builds may run at once: the unpack is under its own
# lock, and the second to take it finds the source already there.)
exec 8>"$BUILD_ROOT/.unpack-lock"
flock 8
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
exec 8>&-
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
printf '%s\n' "$KVERSION" >"$STAGE/release"
}
