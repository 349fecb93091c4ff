/**
 * virtio-fs with the guest's own FUSE client (Linux fs/fuse/virtio_fs.c):
 * mount a host directory with `mount -t virtiofs TAG /mnt` and run a file
 * workload in the guest, checking each step from the host side too. Runs
 * inside the real-KVM test host (`npm run test:linux`).
 *
 * The share is configured as `shares: [{ tag, path, protocol: 'virtiofs' }]`.
 */
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MicroVMConfig } from '../../lib/index.js';
import { requireKvm } from '../helpers/kvm.js';
import { checkShareWorkload, results, runGuest } from './share-helpers.js';

const ARM64 = process.arch === 'arm64';
const TIMEOUT_MS = 5 * 60_000 * (ARM64 ? 2 : 1);
const TAG = 'hostshare';
/** Size of the workload's big file: smaller in the arm64 test host, whose emulated CPU is several times slower. */
const BIG_MIB = ARM64 ? 16 : 32;
const SECRET = 'HOST-ONLY-SECRET-7f3a9c';
const MANY = 1000;
const MOUNT = `mount -t virtiofs ${TAG} /mnt`;

/** Boots the default guest with `config` and runs `script`; see share-helpers.ts. */
const run = (config: Omit<MicroVMConfig, 'kernel'>, script: string, steps: Record<string, () => void> = {}) => runGuest(config, script, steps, TIMEOUT_MS);

/** A share with host-made content, and a sibling the guest must never see. */
function makeShare(): { dir: string; share: string; outside: string } {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-fs-linux-'));
  const share = join(dir, 'share');
  const outside = join(dir, 'outside');
  mkdirSync(share);
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), `${SECRET}\n`);
  writeFileSync(join(share, 'host-file.txt'), 'written-by-the-host\n');
  mkdirSync(join(share, 'many'));
  for (let i = 0; i < MANY; i++) writeFileSync(join(share, 'many', `entry-${i}`), '');
  // Host-made links pointing out of the share: the guest resolves them in its own namespace.
  symlinkSync(outside, join(share, 'host-link-out'));
  symlinkSync(join(outside, 'secret'), join(share, 'host-link-secret'));
  return { dir, share, outside };
}

/**
 * The guest command: mount the share, then run the script the host put in it (the kernel command line holds 2 KiB).
 * The script is copied off the share first: a shell reading it from /mnt would keep the mount busy at umount.
 */
const MOUNT_AND_RUN = `mkdir -p /mnt && ${MOUNT} && echo R:mount=done && cp /mnt/.workload.sh /workload.sh && exec sh /workload.sh || echo R:mount=failed`;

const WORKLOAD = (outside: string) => `
set -u
ok() { echo "R:$1=$2"; }
grep " /mnt " /proc/mounts | head -1 | sed 's/^/R:proc-mounts=/'
cd /mnt
ok host-file "$(cat host-file.txt)"

# create / write / append / read
echo hello > a.txt && echo world >> a.txt
ok append "$(cat a.txt | tr '\\n' '+')"
# truncate
truncate -s 3 a.txt
ok truncate "$(cat a.txt)"
# rename
mv a.txt b.txt && ok rename "$([ -e a.txt ] && echo a-still-there || cat b.txt)"
# hard link
ln b.txt hard.txt && ok nlink "$(stat -c %h b.txt)"
# symlink
ln -s b.txt sym && ok readlink "$(readlink sym)" && ok via-symlink "$(cat sym)"
# chmod
chmod 0741 b.txt && ok mode "$(stat -c %a b.txt)"
# utimes
touch -d "2001-02-03 04:05:06" b.txt && ok mtime "$(stat -c %Y b.txt)"
# mkdir / rmdir
mkdir -p d1/d2/d3 && rmdir d1/d2/d3 && ok dirs "$(ls d1)"
mkdir gone && rmdir gone && ok rmdir "$([ -e gone ] && echo present || echo removed)"
# readdir of ${MANY} host-made entries
ok many "$(ls many | wc -l)"
ok many-last "$(ls many | grep -c '^entry-${MANY - 1}$')"
# files made in the guest, listed back
mkdir made && for i in $(seq 1 200); do echo "$i" > made/f$i; done && ok made "$(ls made | wc -l)"
# unlink
rm made/f1 && ok unlink "$(ls made | wc -l)"
# xattrs: share-xattr.test.ts (they need the tools initramfs and a host filesystem with user xattrs)
# a 32 MiB file
dd if=/dev/urandom of=big bs=1M count=${BIG_MIB} 2>/dev/null && sync
ok big-size "$(stat -c %s big)"
ok big-md5 "$(md5sum big | cut -d' ' -f1)"
# a file written by the host while the guest runs
echo HOST-STEP late-file
i=0; while [ ! -e late.txt ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ok late "$(cat late.txt 2>/dev/null)"
# a file the host changes while the guest runs
echo HOST-STEP change-file
# until the new content shows: the host's writeFileSync truncates first, and a read in between sees an empty file
i=0; while [ "$(cat host-file.txt)" != changed-by-the-host ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ok changed "$(cat host-file.txt)"

# escape attempts: a symlink to / and .. resolve in the GUEST's namespace
ln -s / root
ok esc-root-link "$(cat /mnt/root/${outside.slice(1)}/secret 2>/dev/null || echo blocked)"
ok esc-dotdot "$(cat /mnt/../${outside.slice(1)}/secret 2>/dev/null || echo blocked)"
ok esc-dotdot-many "$(cat /mnt/../../../../../../${outside.slice(1)}/secret 2>/dev/null || echo blocked)"
ok esc-host-link "$(cat /mnt/host-link-out/secret 2>/dev/null || echo blocked)"
ok esc-host-link-file "$(cat /mnt/host-link-secret 2>/dev/null || echo blocked)"
ok esc-abs-link "$(ln -s ${outside}/secret abs && cat abs 2>/dev/null || echo blocked)"
ok esc-mknod "$(mknod /mnt/mem c 1 1 2>/dev/null && echo created || echo refused)"
ok esc-proc "$(ln -s /proc/self/root pr && cat /mnt/pr/${outside.slice(1)}/secret 2>/dev/null || echo blocked)"

cd /
sync
umount /mnt && ok umount done
`;

test.serial('virtio-fs: the guest mounts a host directory and runs a file workload', async (t) => {
  if (!requireKvm(t)) return;
  const { share, outside } = makeShare();
  writeFileSync(join(share, '.workload.sh'), WORKLOAD(outside));
  // rng: the workload reads /dev/urandom. Without an entropy source the guest kernel's CRNG is not ready, and
  // Linux 6.1 then spins in try_to_generate_entropy() until it is, which under the test host's emulated CPU
  // once took over 15 minutes (a CI run of 2026-12-08). virtio-rng seeds it as soon as the device probes.
  const { exit, out } = await run({ rng: true, shares: [{ tag: TAG, path: share, protocol: 'virtiofs' }] }, MOUNT_AND_RUN, {
    // Written aside, then renamed: the guest polls for the name and reads at once, so it must never see it empty.
    'late-file': () => { writeFileSync(join(share, '.late.tmp'), 'made-on-the-host-meanwhile\n'); renameSync(join(share, '.late.tmp'), join(share, 'late.txt')); },
    'change-file': () => writeFileSync(join(share, 'host-file.txt'), 'changed-by-the-host\n'),
  });
  const tail = out.slice(-4000);
  const r = results(out);
  t.is(r.get('mount'), 'done', tail);
  t.log(`mounted: ${r.get('proc-mounts') ?? '?'}`);
  checkShareWorkload(t, { exit, out, r, tail, share, outside, secret: SECRET, many: MANY, bigMiB: BIG_MIB, changedNote: '1 s attribute timeout' });
});

test.serial('virtio-fs: a read-only share can be read but not changed', async (t) => {
  if (!requireKvm(t)) return;
  const { share } = makeShare();
  const before = readFileSync(join(share, 'host-file.txt'), 'utf8');
  const { exit, out } = await run({ shares: [{ tag: TAG, path: share, readOnly: true, protocol: 'virtiofs' }] }, `
${MOUNT} || { echo "R:mount=failed"; exit 1; }
echo "R:read=$(cat /mnt/host-file.txt)"
echo "R:write=$(echo x 2>/dev/null > /mnt/new.txt && echo accepted || echo refused)"
echo "R:overwrite=$(echo x 2>/dev/null > /mnt/host-file.txt && echo accepted || echo refused)"
echo "R:rm=$(rm -f /mnt/host-file.txt 2>/dev/null && [ ! -e /mnt/host-file.txt ] && echo accepted || echo refused)"
echo "R:mkdir=$(mkdir /mnt/d 2>/dev/null && echo accepted || echo refused)"
echo "R:chmod=$(chmod 777 /mnt/host-file.txt 2>/dev/null && echo accepted || echo refused)"
echo "R:errno=$(touch /mnt/t 2>&1 | grep -o 'Read-only file system' | head -1)"
umount /mnt
`);
  const r = results(out);
  t.is(exit.exitStatus, 0, out.slice(-3000));
  t.is(r.get('read'), 'written-by-the-host');
  for (const k of ['write', 'overwrite', 'rm', 'mkdir', 'chmod']) t.is(r.get(k), 'refused', k);
  t.is(r.get('errno'), 'Read-only file system');
  t.is(readFileSync(join(share, 'host-file.txt'), 'utf8'), before);
  t.false(existsSync(join(share, 'new.txt')));
  t.false(existsSync(join(share, 'd')));
});

test.serial("virtio-fs: two shares with their own tags; cache 'never' keeps file data out of the guest's page cache", async (t) => {
  if (!requireKvm(t)) return;
  const a = makeShare();
  const b = makeShare();
  writeFileSync(join(a.share, 'which'), 'share-a');
  writeFileSync(join(b.share, 'which'), 'share-b');
  const big = randomBytes(BIG_MIB * 1024 * 1024);
  writeFileSync(join(a.share, 'big'), big);
  writeFileSync(join(b.share, 'big'), big);
  const { exit, out } = await run({ shares: [{ tag: 'first', path: a.share, protocol: 'virtiofs' }, { tag: 'second', path: b.share, protocol: 'virtiofs', cache: 'never' }] }, `
mkdir -p /m1 /m2
mount -t virtiofs first /m1 && mount -t virtiofs second /m2 || exit 1
echo "R:first=$(cat /m1/which)"
echo "R:second=$(cat /m2/which)"
cached() { sed -n 's/^Cached: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo; }
sync; echo 3 > /proc/sys/vm/drop_caches
c0=$(cached); dd if=/m2/big of=/dev/null bs=1M 2>/dev/null; c1=$(cached); dd if=/m1/big of=/dev/null bs=1M 2>/dev/null; c2=$(cached)
echo "R:never-kib=$((c1 - c0))"
echo "R:auto-kib=$((c2 - c1))"
dd if=/m1/big of=/m2/copy bs=1M 2>/dev/null && dd if=/m2/copy of=/m1/copy-back bs=64k 2>/dev/null && sync && echo "R:copies=done"
umount /m1 /m2
`);
  const r = results(out);
  t.is(exit.exitStatus, 0, out.slice(-3000));
  t.is(r.get('first'), 'share-a');
  t.is(r.get('second'), 'share-b');
  const never = Number(r.get('never-kib'));
  const auto = Number(r.get('auto-kib'));
  t.log(`guest page cache growth reading ${BIG_MIB} MiB: cache 'never' ${never} KiB, 'auto' ${auto} KiB`);
  t.true(auto >= BIG_MIB * 1024 * 0.75, `cache 'auto': the file is in the guest's page cache (${auto} KiB)`);
  t.true(never < BIG_MIB * 1024 * 0.25, `cache 'never': the file is not (${never} KiB)`);
  t.is(r.get('copies'), 'done', out.slice(-3000));
  t.true(readFileSync(join(b.share, 'copy')).equals(big), 'written through the direct-I/O share: the same bytes');
  t.true(readFileSync(join(a.share, 'copy-back')).equals(big), 'read back through it in 64 KiB reads: the same bytes');
});
