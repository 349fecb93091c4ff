#!/usr/bin/env bash
# Build (or find in the cache) the base image of the x86_64 real-KVM test host.
#
# The test host ("L1") is a Linux booted under QEMU's TCG CPU (-cpu max), which
# emulates AMD SVM, so the L1 gets a real /dev/kvm from kvm_amd. Everything in
# it comes from Debian packages plus this machine's node:
#   vmlinuz        Debian's cloud kernel (linux-image-6.1.0-NN-cloud-amd64)
#   base.cpio      initramfs: busybox-static, the KVM modules, node, curl and the
#                  libraries ldd lists, and /init (x86_64-init.sh). Left
#                  uncompressed on purpose: inflating ~110 MB of gzip in the
#                  TCG-emulated kernel costs ~1.5-2 s of every boot.
#
# Output: ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/hosts/x86_64-<key>/, keyed by
# this script, the init script, the kernel package version, the busybox version
# and node's sha256. The directory is printed as the last line of stdout;
# progress goes to stderr.
#
# Usage: bash test/hosts/x86_64-image.sh [--force]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
INIT="$HERE/x86_64-init.sh"
CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
HOSTS="$CACHE/hosts"
FORCE=0

for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "x86_64-image: unknown argument: $a" >&2
		exit 2
		;;
	esac
done

T0=${EPOCHREALTIME/./}
log() { printf 'x86_64-image: [%5.1fs] %s\n' "$(((${EPOCHREALTIME/./} - T0) / 100000))e-1" "$*" >&2; }
die() {
	echo "x86_64-image: error: $*" >&2
	exit 1
}

[ -f "$INIT" ] || die "missing $INIT"

# --- host packages --------------------------------------------------------
need=()
for p in qemu-system-x86 busybox-static cpio curl; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		need+=("$p")
	fi
done
if [ ${#need[@]} -gt 0 ]; then
	log "installing Debian packages: ${need[*]}"
	if [ "$(id -u)" != 0 ]; then
		die "packages missing: ${need[*]} (run: sudo apt-get install -y ${need[*]})"
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "${need[@]}" >&2; then
		apt-get update >&2
		apt-get install -y --no-install-recommends "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
	fi
fi

# --- inputs of the key ----------------------------------------------------
# The apt-cache and sha256 look-ups take ~1 s together, so their answers are
# memoized, keyed by the state of the apt lists and of the node binary.
mkdir -p "$HOSTS"
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
resolve_kernel() {
	# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)" -> "linux-image-6.1.0-56-cloud-amd64 6.1.192-2"
	apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-cloud-amd64\) (= \([^)]*\)).*/\1 \2/p' | head -n1
}
apt_stamp() { ls -l --time-style=+%s /var/lib/apt/lists/ /etc/apt/sources.list* 2>/dev/null | sha256sum | cut -c1-32; }
KRES=$(memo kernel "$(apt_stamp)" resolve_kernel || true)
if [ -z "$KRES" ]; then
	log "apt-cache cannot resolve linux-image-cloud-amd64; running apt-get update"
	if [ "$(id -u)" = 0 ]; then apt-get update >&2 || true; fi
	KRES=$(memo kernel "$(apt_stamp)" resolve_kernel || true)
fi
[ -n "$KRES" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package (apt-cache show linux-image-cloud-amd64)"
KPKG=${KRES% *}
KVER=${KRES#* }
KREL=${KPKG#linux-image-}

BBVER=$(dpkg-query -W -f='${Version}' busybox-static)
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
[ -x "$BUSYBOX" ] || die "busybox-static is installed but its binary was not found"

NODE_CMD=$(command -v node) || die "node is not on PATH"
NODE=$(readlink -f "$NODE_CMD")
node_sha() { sha256sum "$NODE" | cut -d' ' -f1; }
NODE_SHA=$(memo node "$NODE $(stat -c '%d %i %s %Y %Z' "$NODE")" node_sha)

KEY=$(
	{
		echo "format 1"
		sha256sum <"$SELF"
		sha256sum <"$INIT"
		echo "kernel $KPKG $KVER"
		echo "busybox $BBVER"
		echo "node $NODE_SHA"
		echo "e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null)"
		echo "curl $(dpkg-query -W -f='${Version}' curl 2>/dev/null)"
	} | sha256sum | cut -c1-16
)
OUT="$HOSTS/x86_64-$KEY"

if [ "$FORCE" = 0 ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/base.cpio" ]; then
	touch "$OUT" 2>/dev/null || true # marks it as in use, for pruning
	log "cached: $OUT"
	echo "$OUT"
	exit 0
fi

exec 9>"$HOSTS/.x86_64.lock"
flock 9
if [ "$FORCE" = 0 ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/base.cpio" ]; then
	log "cached (built by a concurrent run): $OUT"
	echo "$OUT"
	exit 0
fi

TMP=$(mktemp -d "$HOSTS/.tmp-x86_64-XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
ROOT="$TMP/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,root,work,var/tmp,lib/modules/flintvm}

# --- kernel and modules ---------------------------------------------------
log "downloading $KPKG ($KVER)"
mkdir -p "$TMP/dl"
chmod 777 "$TMP/dl" # lets apt's _apt user write there when run as root
(cd "$TMP/dl" && apt-get download "$KPKG=$KVER" >/dev/null 2>"$TMP/dl.err") ||
	(cd "$TMP/dl" && apt-get download "$KPKG" >/dev/null 2>>"$TMP/dl.err") ||
	die "apt-get download $KPKG failed: $(cat "$TMP/dl.err")"
DEB=$(ls "$TMP"/dl/*.deb | head -n1)
log "extracting $(basename "$DEB")"
dpkg-deb -x "$DEB" "$TMP/k"
cp "$TMP/k/boot/vmlinuz-$KREL" "$TMP/vmlinuz" || die "no boot/vmlinuz-$KREL in $DEB"
MODDIR="$TMP/k/lib/modules/$KREL/kernel"
for m in virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-amd.ko; do
	[ -f "$MODDIR/$m" ] || die "module $m not in $KPKG"
	cp "$MODDIR/$m" "$ROOT/lib/modules/flintvm/"
done
# Optional extras for networking and vsock tests; loaded best-effort by /init.
for m in drivers/net/tun.ko drivers/net/tap.ko net/vmw_vsock/vsock.ko \
	net/vmw_vsock/vmw_vsock_virtio_transport_common.ko drivers/vhost/vhost_iotlb.ko \
	drivers/vhost/vhost.ko drivers/vhost/vhost_vsock.ko drivers/vhost/vhost_net.ko; do
	[ -f "$MODDIR/$m" ] && cp "$MODDIR/$m" "$ROOT/lib/modules/flintvm/"
done
grep -q '^CONFIG_SERIAL_8250_CONSOLE=y' "$TMP/k/boot/config-$KREL" ||
	die "$KPKG has no built-in 8250 console; the test host needs it"

# --- busybox --------------------------------------------------------------
log "installing busybox $BBVER"
cp "$BUSYBOX" "$ROOT/bin/busybox"
"$BUSYBOX" --list-full | while read -r p; do
	[ -e "$ROOT/$p" ] || [ -L "$ROOT/$p" ] || ln -s /bin/busybox "$ROOT/$p"
done

# --- node and its libraries -----------------------------------------------
log "copying node ($NODE) and its libraries"
cp "$NODE" "$ROOT/usr/bin/node"
libs=$(ldd "$NODE" | awk '/=> \// { print $3 } /^\t\// { print $1 }')
interp=$(readelf -l "$NODE" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p' || true)
for l in $libs $interp; do
	mkdir -p "$ROOT/$(dirname "$l")"
	cp -L "$l" "$ROOT/$l"
done

# --- curl and its libraries: the Firecracker API tests drive `curl --unix-socket` ---
CURL=$(command -v curl) || die "curl is missing: apt-get install curl"
cp -L "$CURL" "$ROOT/usr/bin/curl"
for l in $(ldd "$CURL" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
	mkdir -p "$ROOT/$(dirname "$l")"
	[ -f "$ROOT/$l" ] || cp -L "$l" "$ROOT/$l"
done

# --- host tools the tests use on disk images (mke2fs -d, debugfs) -----------
for tool in /sbin/mke2fs /sbin/debugfs; do
	[ -x "$tool" ] || die "$tool is missing: apt-get install e2fsprogs"
	mkdir -p "$ROOT/sbin"
	# busybox may have installed an applet symlink of the same name: replace the link, not its target.
	rm -f "$ROOT/sbin/$(basename "$tool")"
	cp -L "$tool" "$ROOT/sbin/"
	for l in $(ldd "$tool" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
		mkdir -p "$ROOT/$(dirname "$l")"
		[ -f "$ROOT/$l" ] || cp -L "$l" "$ROOT/$l"
	done
done
rm -f "$ROOT/sbin/mkfs.ext4" && ln -s mke2fs "$ROOT/sbin/mkfs.ext4"

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
	echo "busybox $BBVER"
	echo "node $NODE $NODE_SHA $("$NODE" --version)"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$TMP/manifest.txt"

mkdir -p "$TMP/out"
mv "$TMP/vmlinuz" "$TMP/base.cpio" "$TMP/manifest.txt" "$TMP/out/"
if [ -e "$OUT" ]; then
	rm -rf "$OUT.old"
	mv "$OUT" "$OUT.old"
fi
mv "$TMP/out" "$OUT"
rm -rf "$OUT.old"
# Prune images of other inputs that have not been used for a week.
find "$HOSTS" -mindepth 1 -maxdepth 1 -type d -name 'x86_64-*' ! -path "$OUT" -mtime +7 -exec rm -rf {} + 2>/dev/null || true
find "$HOSTS" -mindepth 1 -maxdepth 1 -type d -name '.tmp-x86_64-*' -mmin +120 -exec rm -rf {} + 2>/dev/null || true
log "done: $(du -sh "$OUT" | cut -f1) in $OUT"
echo "$OUT"
