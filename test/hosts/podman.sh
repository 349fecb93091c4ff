#!/usr/bin/env bash
# Build (or find in the cache) the container tools of the x86_64 test host:
# podman, conmon and crun from Debian 12, for the OCI runtime tests
# (test/linux/podman.test.ts), which run them against flintvm-oci and crun.
#
# Nothing is installed on this machine: the packages that are not installed
# here (`apt-get install -s` says which) are fetched with `apt-get download`
# and unpacked; the libraries the three binaries need come from there or from
# this machine (ldd). The tree also has /etc/containers set up for a test
# host: storage driver vfs, cgroupfs, no pivot_root (its root is an
# initramfs), k8s-file logs, file events, and the runtimes crun and flintvm
# (/work/bin/flintvm-oci, a wrapper the test writes).
#
# Output: ${FLINTVM_CACHE:-$HOME/.cache/flintvm}/podman/x86_64-<key>/root/, a
# tree laid over the test host's / (test/hosts/run.ts carries it in when
# $FLINTVM_PODMAN_DIR names it). The key hashes this script and the candidate
# versions of the packages. The directory is printed as the last line of
# stdout; progress goes to stderr.
#
# Usage: bash test/hosts/podman.sh [--force]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
CACHE=${FLINTVM_CACHE:-$HOME/.cache/flintvm}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
FORCE=0
for a in "$@"; do
	case "$a" in
	--force) FORCE=1 ;;
	*)
		echo "podman.sh: unknown argument: $a (usage: podman.sh [--force])" >&2
		exit 2
		;;
	esac
done
log() { echo "podman.sh: $*" >&2; }
die() {
	echo "podman.sh: error: $*" >&2
	exit 1
}
[ "$(uname -m)" = x86_64 ] || die "the podman tree is built for the x86_64 test host only (this machine is $(uname -m))"

TOOLS=(podman conmon crun golang-github-containers-common)
versions() { apt-cache policy "${TOOLS[@]}" 2>/dev/null | awk '/^[a-z]/ { p = $1 } /Candidate:/ { print p, $2 }'; }
VERS=$(versions)
if ! grep -q '^podman: [0-9]' <<<"$VERS"; then
	log "apt-cache knows no podman; running apt-get update"
	[ "$(id -u)" = 0 ] || die "apt-cache has no podman candidate (run: sudo apt-get update)"
	apt-get update >&2 || true
	VERS=$(versions)
	grep -q '^podman: [0-9]' <<<"$VERS" || die "apt-cache has no podman candidate (is this Debian 12 with its main archive?)"
fi
KEY=$( {
	echo "format 1"
	sha256sum <"$SELF"
	echo "$VERS"
} | sha256sum | cut -c1-16)
OUT="$CACHE/podman/x86_64-$KEY"
if [ "$FORCE" = 0 ] && [ -x "$OUT/root/usr/bin/podman" ]; then
	log "cached: $OUT/root"
	echo "$OUT/root"
	exit 0
fi

mkdir -p "$CACHE/podman"
exec 9>"$CACHE/podman/.lock"
flock 9
if [ "$FORCE" = 0 ] && [ -x "$OUT/root/usr/bin/podman" ]; then
	echo "$OUT/root"
	exit 0
fi
TMP=$(mktemp -d "$CACHE/podman/.tmp-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# The tools, and whatever of their dependencies this machine lacks.
missing=$(apt-get install -s --no-install-recommends "${TOOLS[@]}" 2>/dev/null | awk '/^Inst / { print $2 }')
PKGS=$(printf '%s\n' "${TOOLS[@]}" $missing | sort -u)
log "downloading $(echo $PKGS)"
mkdir -p "$TMP/dl" "$TMP/stage"
chmod 777 "$TMP/dl" # apt's _apt user writes there when run as root
# shellcheck disable=SC2086
(cd "$TMP/dl" && apt-get download $PKGS >/dev/null 2>"$TMP/dl.err") || die "apt-get download failed: $(tail -n 5 "$TMP/dl.err")"
for d in "$TMP"/dl/*.deb; do dpkg-deb -x "$d" "$TMP/stage"; done

ROOT="$TMP/out/root"
mkdir -p "$ROOT/usr/bin" "$ROOT/etc/containers" "$ROOT/usr/share/containers" "$ROOT/var/lib/containers" "$ROOT/etc/cni/net.d"
S="$TMP/stage"
LIBPATH="$S/lib/x86_64-linux-gnu:$S/usr/lib/x86_64-linux-gnu"
for b in podman conmon crun; do
	src="$S/usr/bin/$b"
	[ -x "$src" ] || die "no usr/bin/$b in the downloaded packages"
	cp "$src" "$ROOT/usr/bin/$b"
	# Each library lands where Debian has it, so the loader's default path finds it in the test host.
	LD_LIBRARY_PATH=$LIBPATH ldd "$src" | awk '/=> \// { print $3 }' | while read -r l; do
		case $l in
		"$S"/*) dest=${l#"$S"} ;;
		*) dest=$l ;;
		esac
		mkdir -p "$ROOT/$(dirname "$dest")"
		[ -f "$ROOT/$dest" ] || cp -L "$l" "$ROOT/$dest"
	done
	if LD_LIBRARY_PATH=$LIBPATH ldd "$src" | grep -q 'not found'; then
		die "$b: libraries not found: $(LD_LIBRARY_PATH=$LIBPATH ldd "$src" | grep 'not found' | tr -s ' \t' ' ')"
	fi
done
[ -f "$S/usr/share/containers/seccomp.json" ] && cp "$S/usr/share/containers/seccomp.json" "$ROOT/usr/share/containers/"

cat >"$ROOT/etc/containers/storage.conf" <<'EOF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
cat >"$ROOT/etc/containers/containers.conf" <<'EOF'
[containers]
log_driver = "k8s-file"
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
no_pivot_root = true
runtime = "crun"
conmon_path = ["/usr/bin/conmon"]

[engine.runtimes]
crun = ["/usr/bin/crun"]
flintvm-oci = ["/work/bin/flintvm-oci"]
EOF
echo '{ "default": [ { "type": "insecureAcceptAnything" } ] }' >"$ROOT/etc/containers/policy.json"
echo 'unqualified-search-registries = []' >"$ROOT/etc/containers/registries.conf"
echo "$VERS" >"$TMP/out/versions.txt"

rm -rf "$OUT"
mv "$TMP/out" "$OUT"
find "$CACHE/podman" -mindepth 1 -maxdepth 1 -type d -name 'x86_64-*' ! -path "$OUT" -mtime +7 -exec rm -rf {} + 2>/dev/null || true
log "done: $(du -sh "$OUT" | cut -f1) in $OUT/root ($(echo $VERS | tr '\n' ' '))"
echo "$OUT/root"
