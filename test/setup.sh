#!/usr/bin/env bash
# The set-up half of `npm test` (README command 2): everything the tests need
# on a fresh Debian 12 machine with Node, installed by the project itself.
#
#   1. Debian packages: the guest kernel build (and its arm64 cross compiler),
#      the guest initramfs, QEMU for the real-KVM test hosts, dtc for the
#      device-tree unit tests. As root they are installed here, with progress
#      lines; as another user this stops at once and prints the one
#      `apt-get install` line to run.
#   2. The guest images (x86_64 and arm64 kernels, busybox initramfs, the
#      tools initramfs), built once and cached in ~/.cache/flintvm keyed by
#      their inputs: about 20 minutes cold on 2 cores, both built at once, instant
#      warm.
#
# The test hosts' base images are built on first use by test/hosts/run.ts
# (seconds; cached the same way).
#
#   bash test/setup.sh [--packages-only]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
say() { printf '[setup] %s (+%ds)\n' "$*" $((SECONDS - start)) >&2; }

# Every Debian package a test, a guest build or a test host needs. Keep in
# step with README.md ("What npm test installs").
PKGS=(
  build-essential flex bison bc libelf-dev libssl-dev lz4 cpio   # guest kernel build
  linux-source-6.1 gcc-aarch64-linux-gnu                           # its source; the arm64 cross compiler
  busybox-static e2fsprogs                                         # guest initramfs, ext4 images
  qemu-system-x86 qemu-system-arm                                  # the real-KVM test hosts (and the QEMU peer)
  device-tree-compiler                                             # dtc: the arm64 FDT unit tests
  musl-tools                                                       # the static guest agent (guest/agent)
)

missing=()
for p in "${PKGS[@]}"; do
  case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) in
    *"install ok installed"*) ;;
    *) missing+=("$p") ;;
  esac
done
# The arm64 guest's busybox and the arm64 test host come from Debian's arm64
# packages, which needs dpkg's foreign architecture.
need_arch=0
dpkg --print-foreign-architectures | grep -qx arm64 || need_arch=1

if [ ${#missing[@]} -gt 0 ] || [ $need_arch = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    {
      echo "flintvm: the tests need Debian packages that are not installed. Run this once as root, then npm test again:"
      line="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
      [ $need_arch = 0 ] || line="dpkg --add-architecture arm64 && $line"
      [ ${#missing[@]} -gt 0 ] || line="dpkg --add-architecture arm64 && apt-get update"
      echo "  sudo sh -c '$line'"
    } >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ $need_arch = 1 ]; then
    say "adding dpkg's arm64 architecture (for the arm64 guest and test host)"
    dpkg --add-architecture arm64
  fi
  say "apt-get update"
  apt-get update -q >/dev/null
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${#missing[@]} Debian packages: ${missing[*]} (a few minutes)"
    apt-get install -y -q --no-install-recommends "${missing[@]}" |
      grep --line-buffered -E '^(Unpacking|Setting up) ' | sed -u 's/^/[setup]   /' >&2 || true
    # The pipeline hides apt's exit status: check the result instead.
    for p in "${missing[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        { say "ERROR: apt-get install did not install $p"; exit 1; }
    done
  fi
  say "Debian packages ready"
fi
[ "${1:-}" = --packages-only ] && exit 0

if [ ! -d node_modules/koffi ]; then
  say "npm ci (node_modules is missing)"
  npm ci --no-audit --no-fund >&2
fi

# Both architectures' guests build side by side: each kernel build alone
# leaves a core idle in its single-threaded phases (unpack, config, link,
# the initramfs archives), which the other one fills.
say "guest images: x86_64 and arm64 side by side (cached in ${FLINTVM_CACHE:-~/.cache/flintvm}; about 20 minutes when they have to build)"
bash guest/build.sh >/dev/null &
x86_build=$!
bash guest/build.sh --arch arm64 >/dev/null &
arm64_build=$!
if [ "$(uname -m)" = x86_64 ]; then
  say "guest agent (guest/agent, a few seconds when it has to build)"
  bash guest/agent/build.sh >/dev/null
  say "podman, conmon and crun for the x86_64 test host (test/hosts/podman.sh: downloads Debian packages, installs nothing)"
  bash test/hosts/podman.sh >/dev/null
fi
failed=()
wait $x86_build || failed+=(x86_64)
wait $arm64_build || failed+=(arm64)
if [ ${#failed[@]} -gt 0 ]; then
  say "ERROR: the ${failed[*]} guest build failed (its last lines are above; rerun: bash guest/build.sh --arch ${failed[0]})"
  exit 1
fi
say "ready"
