/**
 * The escape suite: a hostile guest driving the FUSE server directly tries to
 * reach, read, change or create files outside the shared directory. Each test
 * asserts the error AND that the `outside` tree is unchanged afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { bytes, FuseHarness, W } from './fuse-harness.js';
import { snapshot } from '../9p/p9-harness.js';

const ELOOP = 40;
const SECRET = 'TOP-SECRET\n';

function setup(share: string, outside: string): void {
  mkdirSync(join(share, 'dir'));
  writeFileSync(join(share, 'file'), 'share file\n');
  symlinkSync(join(outside, 'secret'), join(share, 'abs'));
  symlinkSync('../outside/secret', join(share, 'rel'));
  symlinkSync(outside, join(share, 'absdir'));
  symlinkSync('../outside', join(share, 'reldir'));
}

function escape(title: string, fn: (h: FuseHarness, t: ExecutionContext) => void): void {
  test(title, (t) => {
    const h = new FuseHarness({}, setup);
    const before = snapshot(h.outside);
    const parent = snapshot(h.dir);
    try {
      fn(h, t);
      t.deepEqual(snapshot(h.outside), before, 'outside changed');
      t.is(readFileSync(join(h.outside, 'secret'), 'utf8'), SECRET);
      const after = Object.keys(snapshot(h.dir)).filter((k) => !k.startsWith('share') && !k.startsWith('outside'));
      t.deepEqual(after, Object.keys(parent).filter((k) => !k.startsWith('share') && !k.startsWith('outside')), 'a file appeared next to the share');
    } finally {
      h.close();
    }
  });
}

escape('lookup of ".." and "." is refused (EINVAL), root has no way up', (h, t) => {
  t.is(h.errno(() => h.lookup(1, '..')), F.EINVAL);
  t.is(h.errno(() => h.lookup(1, '.')), F.EINVAL);
  const d = h.lookup(1, 'dir');
  t.is(h.errno(() => h.lookup(d.nodeid, '..')), F.EINVAL);
});

escape('names with "/" are refused everywhere', (h, t) => {
  t.is(h.errno(() => h.lookup(1, '../outside/secret')), F.EINVAL);
  t.is(h.errno(() => h.lookup(1, 'dir/../../outside')), F.EINVAL);
  t.is(h.errno(() => h.create(1, '../outside/new')), F.EINVAL);
  t.is(h.errno(() => h.mkdir(1, '../outside/d')), F.EINVAL);
  t.is(h.errno(() => h.symlink(1, '../outside/s', 'x')), F.EINVAL);
  t.is(h.errno(() => h.unlink(1, '../outside/secret')), F.EINVAL);
  t.is(h.errno(() => h.lookup(1, '/etc/passwd')), F.EINVAL);
});

escape('symlink pointing out: lookup returns the link itself, and lookups through it fail', (h, t) => {
  for (const name of ['abs', 'rel']) {
    const e = h.lookup(1, name);
    t.is(e.attr.mode & 0o170000, 0o120000);
    t.is(h.errno(() => h.open(e.nodeid, 0)), ELOOP);
  }
  for (const name of ['absdir', 'reldir']) {
    const e = h.lookup(1, name);
    t.is(h.errno(() => h.lookup(e.nodeid, 'secret')), F.ENOTDIR);
    t.is(h.errno(() => h.create(e.nodeid, 'planted')), F.ENOTDIR);
    t.is(h.errno(() => h.open(e.nodeid, 0, true)), ELOOP);
  }
});

escape('guest-made symlink to outside, then create/open through it', (h, t) => {
  const s = h.symlink(1, 'evil', h.outside);
  t.is(h.errno(() => h.lookup(s.nodeid, 'secret')), F.ENOTDIR);
  t.is(h.errno(() => h.create(s.nodeid, 'x')), F.ENOTDIR);
  const s2 = h.symlink(1, 'evil2', join(h.outside, 'secret'));
  t.is(h.errno(() => h.open(s2.nodeid, F.O_RDWR)), ELOOP);
  t.is(h.errno(() => h.setattr(s2.nodeid, { valid: F.FATTR_SIZE, size: 0n })), F.EINVAL);
});

escape('nodeid guessing: unknown, huge and freed nodeids are ESTALE', (h, t) => {
  for (const id of [0n, 2n, 3n, 1000n, (1n << 64n) - 1n, 0x8000000000000000n]) {
    t.is(h.errno(() => h.getattr(id)), F.ESTALE);
    t.is(h.errno(() => h.lookup(id, 'secret')), F.ESTALE);
  }
  const e = h.lookup(1, 'file');
  h.forget(e.nodeid, 1n);
  t.is(h.errno(() => h.getattr(e.nodeid)), F.ESTALE);
  // host inode numbers are not nodeids
  t.is(h.errno(() => h.getattr(e.attr.ino)), F.ESTALE);
});

escape('fh guessing: unknown and released handles are EBADF', (h, t) => {
  for (const fh of [0n, 1n, 7n, (1n << 64n) - 1n]) {
    t.is(h.errno(() => h.read(fh, 0, 10)), F.EBADF);
    t.is(h.errno(() => h.write(fh, 0, bytes('x'))), F.EBADF);
  }
  const e = h.lookup(1, 'file');
  const fh = h.open(e.nodeid, 0);
  h.release(fh);
  t.is(h.errno(() => h.read(fh, 0, 10)), F.EBADF);
  t.is(h.errno(() => h.release(fh)), F.EBADF);
});

escape('rename to outside via crafted names and symlinked directories', (h, t) => {
  t.is(h.errno(() => h.rename(1, 'file', 1, '../outside/stolen')), F.EINVAL);
  t.is(h.errno(() => h.rename(1, '../outside/secret', 1, 'got')), F.EINVAL);
  const d = h.lookup(1, 'absdir');
  t.is(h.errno(() => h.rename(1, 'file', d.nodeid, 'stolen')), F.ENOTDIR);
  t.is(h.errno(() => h.rename(d.nodeid, 'secret', 1, 'got')), F.ENOTDIR);
  t.false(existsSync(join(h.share, 'got')));
});

escape('hard link to outside: through symlink dir, crafted name, symlink node', (h, t) => {
  const d = h.lookup(1, 'absdir');
  const f = h.lookup(1, 'file');
  t.is(h.errno(() => h.link(f.nodeid, d.nodeid, 'x')), F.ENOTDIR);
  t.is(h.errno(() => h.link(f.nodeid, 1, '../outside/x')), F.EINVAL);
  const abs = h.lookup(1, 'abs');
  // linking the symlink itself makes another symlink inside the share, never the target
  h.link(abs.nodeid, 1, 'abs2');
  const a2 = h.lookup(1, 'abs2');
  t.is(a2.attr.mode & 0o170000, 0o120000);
  t.is(h.errno(() => h.open(a2.nodeid, 0)), ELOOP);
});

escape('readdir of a symlinked directory, opendir/read on the wrong kinds', (h, t) => {
  const d = h.lookup(1, 'reldir');
  t.is(h.errno(() => h.readdir(d.nodeid)), ELOOP);
  const dir = h.lookup(1, 'dir');
  t.is(h.errno(() => h.open(dir.nodeid, 0)), F.EISDIR);
  const f = h.lookup(1, 'file');
  const fh = h.open(f.nodeid, 0);
  t.is(h.errno(() => h.call(F.FUSE_READDIR, f.nodeid, new W().u64(fh).u64(0).u32(4096).u32(0).u64(0).u32(0).u32(0).bytes())), F.ENOTDIR);
});

escape('mknod of devices, setuid via create/chmod, xattr in trusted/security', (h, t) => {
  t.is(h.errno(() => h.call(F.FUSE_MKNOD, 1, new W().u32(0o060600).u32(0x0801).u32(0).u32(0).str('sda').bytes())), F.EPERM);
  const { entry } = h.create(1, 'suid', 0o102, 0o104755);
  t.is(entry.attr.mode & 0o4000, 0);
  t.is(h.setattr(entry.nodeid, { valid: F.FATTR_MODE, mode: 0o6755 }).mode & 0o4000, 0);
  t.is(h.errno(() => h.setxattr(entry.nodeid, 'security.capability', bytes('x'))), F.EPERM);
  t.is(h.errno(() => h.setxattr(entry.nodeid, 'trusted.overlay.opaque', bytes('y'))), F.EPERM);
});

escape('symlink target is stored verbatim; readlink never resolves; O_TRUNC through a link refused', (h, t) => {
  const s = h.symlink(1, 'up', '../../../../etc/passwd');
  t.is(h.readlink(s.nodeid), '../../../../etc/passwd');
  t.is(h.errno(() => h.open(s.nodeid, F.O_TRUNC | F.O_WRONLY)), ELOOP);
  const e = h.lookup(1, 'abs');
  t.is(h.errno(() => h.create(1, 'abs', 0o1101)), ELOOP);
  t.is(h.readlink(e.nodeid), join(h.outside, 'secret'));
});

escape('RENAME2 with WHITEOUT and unknown flags is refused', (h, t) => {
  t.is(h.errno(() => h.rename(1, 'file', 1, 'w', 4 /* WHITEOUT */)), F.EINVAL);
  t.is(h.errno(() => h.rename(1, 'file', 1, 'w', 0x80)), F.EINVAL);
  t.true(existsSync(join(h.share, 'file')));
});
