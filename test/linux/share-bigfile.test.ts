/**
 * A 512 MiB file through each shared-directory protocol (the size).
 * The host writes 512 MiB of random bytes into the share; the guest copies
 * the file to a new one on the same share with `dd bs=1M` (reading it
 * through the protocol, writing the copy back through it), syncs, and reports
 * the sizes it sees; the host then compares the copy with the original byte
 * for byte. Random data makes any misplaced or dropped chunk show; the guest
 * needs no md5 of its own (md5sum over 512 MiB takes minutes under TCG).
 * busybox `cp` moves 4 KiB per request: 91 s for 512 MiB over 9p in the
 * test host, against about 17 s for 1 MiB requests.
 *
 * Size: FLINTVM_SHARE_BIG_MIB, default 512. Peak tmpfs use in the test host
 * is twice that; the files are removed after each protocol.
 */
import test from 'ava';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKvm } from '../helpers/kvm.js';
import { mountCommand, results, runGuest, type ShareProtocol } from './share-helpers.js';

const MiB = 1024 * 1024;
const SIZE_MIB = Number(process.env.FLINTVM_SHARE_BIG_MIB ?? 512);
const TAG = 'bigshare';
const CHUNK = 8 * MiB;

function writeRandomFile(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(CHUNK);
  try {
    for (let done = 0; done < bytes; done += CHUNK) {
      randomFillSync(buf);
      writeSync(fd, buf, 0, Math.min(CHUNK, bytes - done));
    }
  } finally {
    closeSync(fd);
  }
}

/** The first offset where the files differ, or -1 when they are identical (sizes included). */
function firstDifference(a: string, b: string): number {
  if (statSync(a).size !== statSync(b).size) return Math.min(statSync(a).size, statSync(b).size);
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const ba = Buffer.alloc(CHUNK);
  const bb = Buffer.alloc(CHUNK);
  try {
    for (let off = 0; ; off += CHUNK) {
      const na = readSync(fa, ba, 0, CHUNK, off);
      const nb = readSync(fb, bb, 0, CHUNK, off);
      if (na !== nb) return off + Math.min(na, nb);
      if (na === 0) return -1;
      if (!ba.subarray(0, na).equals(bb.subarray(0, nb))) {
        for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return off + i;
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

for (const protocol of ['9p', 'virtiofs'] as const satisfies readonly ShareProtocol[]) {
  test.serial(`${protocol}: a ${SIZE_MIB} MiB file from the host, copied by the guest on the share, is the same byte for byte`, async (t) => {
    if (!requireKvm(t)) return;
    const share = mkdtempSync(join(tmpdir(), `flintvm-big-${protocol}-`));
    try {
      writeRandomFile(join(share, 'big'), SIZE_MIB * MiB);
      const script = [
        'set -e',
        `${mountCommand(protocol, TAG)}`,
        'a=$(cut -d" " -f1 /proc/uptime)',
        'dd if=/mnt/big of=/mnt/copy bs=1M 2>/dev/null',
        'sync',
        'b=$(cut -d" " -f1 /proc/uptime)',
        'echo "R:size-big=$(stat -c %s /mnt/big)"',
        'echo "R:size-copy=$(stat -c %s /mnt/copy)"',
        'echo "R:copy-s=$a $b"',
        'umount /mnt',
        'echo R:done=yes',
      ].join('\n');
      const { exit, out, ms } = await runGuest({ shares: [{ tag: TAG, path: share, protocol }] }, script, {}, 10 * 60_000);
      const r = results(out);
      const tail = out.slice(-3000);
      t.is(exit.reason, 'guest-exit', tail);
      t.is(exit.exitStatus, 0, tail);
      t.is(r.get('done'), 'yes', tail);
      t.is(r.get('size-big'), String(SIZE_MIB * MiB), 'the guest sees the host file whole');
      t.is(r.get('size-copy'), String(SIZE_MIB * MiB));
      const [a, b] = (r.get('copy-s') ?? '0 0').split(' ').map(Number);
      t.log(`${protocol}: dd copy of ${SIZE_MIB} MiB + sync ${(b! - a!).toFixed(1)} s by the guest clock; whole VM ${(ms / 1000).toFixed(1)} s`);
      t.is(firstDifference(join(share, 'big'), join(share, 'copy')), -1, 'the copy the guest wrote equals the original');
    } finally {
      rmSync(share, { recursive: true, force: true });
    }
  });
}
