#!/usr/bin/env bash
# Build (or find in the cache) a qemu-system-aarch64 for the arm64 real-KVM test
# host, whose image has no QEMU. It is Debian's arm64 build (qemu-system-arm:arm64)
# with the shared libraries it links, taken from their Debian arm64 packages:
#   1. apt-cache resolves qemu-system-arm:arm64's Depends closure (no Recommends);
#      its real arm64 packages (mostly libraries) are downloaded once (apt-get
#      download, ~35 MB) and extracted (dpkg-deb -x);
#   2. bin/qemu-system-aarch64 and lib/ are made from them: every DT_NEEDED of the
#      binary, recursively, except glibc's own libraries (libc, libm, the loader...),
#      which the test host already has from the same Debian release (they must
#      match its ld-linux-aarch64.so.1).
# No firmware is needed: the benchmark boots with -kernel on `-M virt`.
#
# Inside the host, run it as LD_LIBRARY_PATH=DIR/lib DIR/bin/qemu-system-aarch64.
#
# Output: ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/bench/qemu-arm64-<key>/ with bin/,
# lib/ and manifest.txt, keyed by this script and the versions of the packages.
# The .debs are kept in bench/qemu-arm64-debs/. The directory is the last line
# of stdout; progress goes to stderr.
#
# Usage: bash bench/host-qemu-arm64.sh [--force]
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
BENCH_CACHE="$CACHE/bench"
DEBS_DIR="$BENCH_CACHE/qemu-arm64-debs"
FORCE=0
for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "host-qemu-arm64: unknown argument: $a" >&2
		exit 2
		;;
	esac
done

log() { printf 'host-qemu-arm64: %s\n' "$*" >&2; }
die() {
	echo "host-qemu-arm64: error: $*" >&2
	exit 1
}

for t in apt-cache apt-get dpkg-deb readelf sha256sum flock; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
archs=" $(dpkg --print-architecture) $(dpkg --print-foreign-architectures | tr '\n' ' ') "
[[ "$archs" == *" arm64 "* ]] ||
	die "dpkg has no arm64 architecture: run bash test/hosts/arm64-image.sh once (or dpkg --add-architecture arm64 && apt-get update)"

# --- 1. the package set and its versions (the key) -------------------------
resolve() {
	local pkgs
	pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances qemu-system-arm:arm64 2>/dev/null |
		grep -E '^[a-z0-9][^ <>]*:arm64$' | sort -u) || return 1
	[ -n "$pkgs" ] || return 1
	# One apt-cache show for all: "PACKAGE VERSION" per line.
	apt-cache show --no-all-versions $pkgs 2>/dev/null |
		awk '/^Package: / { p = $2 } /^Version: / { print p, $2 }' | sort -u
}
RES=$(resolve || true)
if ! grep -q '^qemu-system-arm ' <<<"$RES"; then
	if [ "$(id -u)" = 0 ]; then
		log "apt-cache cannot resolve qemu-system-arm:arm64; running apt-get update"
		apt-get update >&2 || true
		RES=$(resolve || true)
	fi
	grep -q '^qemu-system-arm ' <<<"$RES" || die "apt-cache cannot resolve qemu-system-arm:arm64 and its dependencies"
fi
KEY=$(
	{
		echo "format 1"
		sha256sum <"$SELF"
		echo "$RES"
	} | sha256sum | cut -c1-16
)
OUT="$BENCH_CACHE/qemu-arm64-$KEY"
complete() { [ -x "$OUT/bin/qemu-system-aarch64" ] && [ -f "$OUT/manifest.txt" ]; }
if [ "$FORCE" = 0 ] && complete; then
	log "cached: $OUT"
	echo "$OUT"
	exit 0
fi

mkdir -p "$BENCH_CACHE" "$DEBS_DIR"
exec 9>"$BENCH_CACHE/.qemu-arm64.lock"
flock 9
if [ "$FORCE" = 0 ] && complete; then
	log "cached (built by a concurrent run): $OUT"
	echo "$OUT"
	exit 0
fi

TMP=$(mktemp -d "$BENCH_CACHE/.tmp-qemu-arm64-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# --- 2. download (once per package version) ---------------------------------
deb_of() { # deb_of PACKAGE VERSION: the cached .deb's path (apt-get download names epochs as %3a)
	local v=${2//:/%3a}
	echo "$DEBS_DIR/${1}_${v}_arm64.deb"
}
missing=()
while read -r p v; do
	[ -s "$(deb_of "$p" "$v")" ] || missing+=("$p:arm64=$v")
done <<<"$RES"
if [ ${#missing[@]} -gt 0 ]; then
	log "downloading ${#missing[@]} Debian arm64 packages (qemu-system-arm and its libraries)"
	mkdir -p "$TMP/dl"
	chmod 777 "$TMP/dl" # apt's _apt user writes there when run as root
	(cd "$TMP/dl" && apt-get download "${missing[@]}" >/dev/null 2>"$TMP/dl.err") ||
		die "apt-get download failed: $(tail -n 5 "$TMP/dl.err")"
	mv "$TMP"/dl/*.deb "$DEBS_DIR/"
fi

# --- 3. extract, then keep the binary and its DT_NEEDED closure -------------
log "extracting $(wc -l <<<"$RES") packages"
SYS="$TMP/sys"
mkdir -p "$SYS"
while read -r p v; do
	f=$(deb_of "$p" "$v")
	[ -s "$f" ] || die "no $f after apt-get download"
	dpkg-deb -x "$f" "$SYS"
done <<<"$RES"
QEMU="$SYS/usr/bin/qemu-system-aarch64"
[ -f "$QEMU" ] || die "qemu-system-arm:arm64 has no usr/bin/qemu-system-aarch64"

STAGE="$TMP/out"
mkdir -p "$STAGE/bin" "$STAGE/lib"
cp "$QEMU" "$STAGE/bin/qemu-system-aarch64"
chmod 755 "$STAGE/bin/qemu-system-aarch64"
# glibc: the test host's own (libc6:arm64 is in its base image), so these are not copied.
is_glibc() {
	case $1 in
	ld-linux-aarch64.so.1 | libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libresolv.so.2 | libutil.so.1 | libanl.so.1) return 0 ;;
	*) return 1 ;;
	esac
}
LIBDIRS=(lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu)
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'; }
declare -A have=()
queue=("$STAGE/bin/qemu-system-aarch64")
while [ ${#queue[@]} -gt 0 ]; do
	f=${queue[0]}
	queue=("${queue[@]:1}")
	for n in $(needed "$f"); do
		[ -n "${have[$n]:-}" ] && continue
		have[$n]=1
		is_glibc "$n" && continue
		found=
		for d in "${LIBDIRS[@]}"; do
			if [ -e "$SYS/$d/$n" ]; then
				found="$SYS/$d/$n"
				break
			fi
		done
		[ -n "$found" ] || die "$(basename "$f") needs $n, which no package of qemu-system-arm:arm64's Depends closure has"
		cp -L "$found" "$STAGE/lib/$n"
		queue+=("$STAGE/lib/$n")
	done
done
[ "$(readelf -h "$STAGE/bin/qemu-system-aarch64" | sed -n 's/.*Machine: *//p')" = AArch64 ] ||
	die "qemu-system-aarch64 from qemu-system-arm:arm64 is not an AArch64 binary"

{
	echo "key $KEY"
	echo "$RES" | sed 's/^/deb /'
	echo "libs $(cd "$STAGE/lib" && ls | tr '\n' ' ')"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$STAGE/manifest.txt"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
# Prune bundles of other inputs not used for a month.
find "$BENCH_CACHE" -mindepth 1 -maxdepth 1 -type d -name 'qemu-arm64-*' ! -name qemu-arm64-debs ! -path "$OUT" -mtime +30 -exec rm -rf {} + 2>/dev/null || true
log "done: $(du -sh "$OUT" | cut -f1) in $OUT ($(ls "$OUT/lib" | wc -l) libraries)"
echo "$OUT"
