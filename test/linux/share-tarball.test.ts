/**
 * A real tarball extracted by the guest (busybox tar) onto a shared
 * directory, over virtio-9p and over virtio-fs, and checked file by file
 * against the same tarball extracted on the host: every regular file's MD5,
 * mode and mtime, every symlink's target, every directory's mode, and nothing
 * more or less. Then the guest reads the tree back through the share (after
 * dropping its caches) and its MD5s and link targets must match too.
 *
 * The tarball: the data archive of a Debian package (the tree dpkg installs:
 * directories, regular files, symlinks; made by dpkg-deb with GNU tar,
 * xz-compressed, so the guest's busybox tar -J reads it as shipped):
 * - $FLINTVM_SHARE_TARBALL (a path inside the test host), else
 * - `share-fixture.tar.xz` in the guest directory ($FLINTVM_GUEST_DIR); make
 *   one with `node dist/bench/share-fixture.js --stage DIR` (tzdata: ~900
 *   files, ~365 symlinks) and run with `--guest-dir DIR`;
 * - else (the plain `npm run test:linux`, which carries no fixture) a
 *   tarball the host makes from real npm packages in the project's
 *   node_modules (ava, debug, fast-check, koffi: ~180 files, and
 *   node_modules/.bin's symlinks), with the host's busybox tar. The log says
 *   which one ran.
 *
 * Measured in the test host (1 TCG vCPU, alone): tzdata (1319 entries) took
 * the guest 166 s to extract over 9p and 31 s over virtio-fs; the whole file
 * ~5 minutes.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireKvm } from '../helpers/kvm.js';
import { mountCommand, results, runGuest, type ShareProtocol } from './share-helpers.js';

const TIMEOUT_MS = 8 * 60_000;
const TAG = 'tarshare';
const FIXTURE_NAME = 'share-fixture.tar.xz';
/** Packages of node_modules for the fallback tarball (those present are taken). */
const FALLBACK_TREES = ['node_modules/.bin', 'node_modules/ava', 'node_modules/debug', 'node_modules/fast-check', 'node_modules/koffi'];

interface Fixture {
  path: string;
  what: string;
  xz: boolean;
}

function fixture(work: string): Fixture {
  const env = process.env.FLINTVM_SHARE_TARBALL;
  if (env) {
    if (!existsSync(env)) throw new Error(`FLINTVM_SHARE_TARBALL=${env} does not exist`);
    return { path: env, what: `$FLINTVM_SHARE_TARBALL (${env})`, xz: env.endsWith('.xz') };
  }
  const inGuestDir = join(process.env.FLINTVM_GUEST_DIR ?? '/nonexistent', FIXTURE_NAME);
  if (existsSync(inGuestDir)) return { path: inGuestDir, what: `the guest directory's ${FIXTURE_NAME} (a Debian package's data.tar.xz)`, xz: true };
  const project = fileURLToPath(new URL('../../../', import.meta.url));
  const trees = FALLBACK_TREES.filter((p) => existsSync(join(project, p)));
  if (trees.length === 0) throw new Error(`no tarball: none of ${FALLBACK_TREES.join(', ')} under ${project}`);
  const path = join(work, 'node-modules.tar');
  execFileSync('tar', ['-cf', path, '-C', project, ...trees]);
  return { path, what: `a tar of ${trees.join(', ')} (no Debian fixture carried: see the file comment)`, xz: false };
}

/** One tree entry: what a path is, compared between the host's and the guest's extraction. */
type Entry = { type: 'file'; md5: string; mode: number; mtime: number } | { type: 'link'; target: string } | { type: 'dir'; mode: number };

function walk(root: string, rel = '', into = new Map<string, Entry>()): Map<string, Entry> {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const p = join(root, r);
    const st = lstatSync(p);
    if (st.isSymbolicLink()) into.set(r, { type: 'link', target: readlinkSync(p) });
    else if (st.isDirectory()) {
      into.set(r, { type: 'dir', mode: st.mode & 0o7777 });
      walk(root, r, into);
    } else if (st.isFile()) {
      into.set(r, { type: 'file', md5: createHash('md5').update(readFileSync(p)).digest('hex'), mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) });
    } else into.set(r, { type: 'dir', mode: -1 }); // anything else is a difference in itself
  }
  return into;
}

/** Differences between two trees, one line each (at most `max`). */
function diff(want: Map<string, Entry>, got: Map<string, Entry>, max = 20): string[] {
  const d: string[] = [];
  for (const [k, v] of want) {
    const g = got.get(k);
    if (!g) d.push(`missing: ${k}`);
    else if (JSON.stringify(g) !== JSON.stringify(v)) d.push(`${k}: want ${JSON.stringify(v)}, got ${JSON.stringify(g)}`);
  }
  for (const k of got.keys()) if (!want.has(k)) d.push(`extra: ${k}`);
  return d.slice(0, max);
}

const WORKLOAD = (xz: boolean) => `
set -u
up() { cut -d' ' -f1 /proc/uptime; }
cd /mnt && mkdir x || exit 1
a=$(up)
tar -x${xz ? 'J' : ''}f .fixture -C x; echo "R:tar-status=$?"
sync
echo "R:tar-seconds=$a $(up)"
# Read back through the share, not the guest's page cache.
echo 3 > /proc/sys/vm/drop_caches
cd x
find . -type f -exec md5sum {} + > /mnt/.guest-md5; echo "R:md5-status=$?"
find . -type l | while read -r l; do printf '%s\\t%s\\n' "$l" "$(readlink "$l")"; done > /mnt/.guest-links
echo "R:counts=$(find . -type f | wc -l) $(find . -type l | wc -l) $(find . -type d | wc -l)"
cd /
umount /mnt && echo R:umount=done
`;

for (const protocol of ['9p', 'virtiofs'] as ShareProtocol[]) {
  test.serial(`${protocol}: a real tarball extracted in the guest onto the share matches a host-side extraction, file by file`, async (t) => {
    if (!requireKvm(t)) return;
    const work = mkdtempSync(join(tmpdir(), `flintvm-tar-${protocol}-`));
    try {
      const fx = fixture(work);
      t.log(`tarball: ${fx.what}`);
      const ref = join(work, 'ref');
      mkdirSync(ref);
      execFileSync('tar', [fx.xz ? '-xJf' : '-xf', fx.path, '-C', ref]);
      const want = walk(ref);
      const count = (type: Entry['type']) => [...want.values()].filter((e) => e.type === type).length;
      t.log(`host extraction: ${count('file')} files, ${count('link')} symlinks, ${count('dir')} directories`);

      const share = join(work, 'share');
      mkdirSync(share);
      copyFileSync(fx.path, join(share, '.fixture'));
      writeFileSync(join(share, '.tarball.sh'), WORKLOAD(fx.xz));
      const script = `mkdir -p /mnt && ${mountCommand(protocol, TAG)} && cp /mnt/.tarball.sh /tmp/w.sh && exec sh /tmp/w.sh || echo R:mount=failed`;
      const { exit, out, ms } = await runGuest({ shares: [{ tag: TAG, path: share, protocol }] }, script, {}, TIMEOUT_MS);
      const tail = out.slice(-3000);
      const r = results(out);
      t.is(exit.reason, 'guest-exit', tail);
      t.is(exit.exitStatus, 0, tail);
      t.is(r.get('tar-status'), '0', tail);
      const [a, b] = (r.get('tar-seconds') ?? '').split(' ').map(Number);
      t.log(`guest: tar -x + sync ${(b! - a!).toFixed(2)} s by its clock; whole VM ${(ms / 1000).toFixed(1)} s`);

      // The host's view of what the guest wrote.
      t.deepEqual(diff(want, walk(join(share, 'x'))), [], 'the guest-extracted tree on the host differs from the host extraction');

      // The guest's view, read back through the share.
      t.is(r.get('md5-status'), '0', tail);
      t.is(r.get('counts'), `${count('file')} ${count('link')} ${count('dir') + 1}`, 'files, symlinks, directories (+ x itself) the guest counts');
      const guestMd5 = new Map(readFileSync(join(share, '.guest-md5'), 'utf8').trim().split('\n').filter(Boolean).map((l) => {
        const m = /^([0-9a-f]{32}) {2}\.\/(.*)$/.exec(l);
        return m ? [m[2]!, m[1]!] : [l, 'unparsed'];
      }));
      const wantMd5 = new Map([...want].flatMap(([k, e]) => (e.type === 'file' ? [[k, e.md5] as const] : [])));
      t.deepEqual(new Map([...guestMd5].sort()), new Map([...wantMd5].sort()), 'MD5s the guest reads back');
      const guestLinks = new Map(readFileSync(join(share, '.guest-links'), 'utf8').split('\n').filter(Boolean).map((l) => {
        const [k, v] = l.split('\t');
        return [k!.replace(/^\.\//, ''), v ?? ''];
      }));
      const wantLinks = new Map([...want].flatMap(([k, e]) => (e.type === 'link' ? [[k, e.target] as const] : [])));
      t.deepEqual(new Map([...guestLinks].sort()), new Map([...wantLinks].sort()), 'symlink targets the guest reads back');
      t.is(r.get('umount'), 'done');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}
