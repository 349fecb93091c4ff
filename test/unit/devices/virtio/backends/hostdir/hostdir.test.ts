/**
 * The host-directory backend on its own (the API virtio-9p and virtio-fs
 * share): name validation, the node table and its references, the sandbox
 * (lookups and creates never follow a symlink or leave the share), open and
 * re-open, attributes, directory cookies, xattr policy, locks, lseek,
 * fallocate, read-only refusals, fd budgets and leaks, and openHostDir.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsError, HostDir, kindOf, sanitizePerm, openHostDir, componentBytes, type Node, type OpenFile } from '../../../../../../devices/virtio/backends/hostdir/index.js';
import { checkOpenat2, openat2Error } from '../../../../../../devices/virtio/backends/hostdir/open.js';
import { Node as TableNode, NodeTable } from '../../../../../../devices/virtio/backends/hostdir/nodes.js';
import * as S from '../../../../../../devices/virtio/backends/hostdir/sys.js';
import { ConfigError } from '../../../../../../lib/errors.js';
import { mapGuestMemory } from '../../../../../../lib/memory/host-memory.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Env {
  dir: string;
  share: string;
  outside: string;
  fs: HostDir;
}

/** A test body with a fresh share (and an `outside` sibling), disposed afterwards; checks no fd leaked. */
function withShare(opts: { readOnly?: boolean; maxFds?: number }, fn: (t: ExecutionContext, e: Env) => void, setup?: (share: string, outside: string) => void) {
  return (t: ExecutionContext) => {
    const dir = mkdtempSync(join(tmpdir(), 'flintvm-hostdir-'));
    const share = join(dir, 'share');
    const outside = join(dir, 'outside');
    mkdirSync(share);
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'SECRET');
    setup?.(share, outside);
    const fds = openFds();
    const h = openHostDir(share, { readOnly: opts.readOnly ?? false, field: 'shares[0].path' });
    const fs = new HostDir(h.rootFd, { readOnly: opts.readOnly ?? false, ...(opts.maxFds !== undefined ? { maxFds: opts.maxFds } : {}) });
    try {
      fn(t, { dir, share, outside, fs });
    } finally {
      fs.dispose();
      h.close();
      t.is(openFds(), fds, 'no fd leaked');
      t.is(readFileSync(join(outside, 'secret'), 'utf8'), 'SECRET');
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof FsError) return e.errno;
    throw e;
  }
  throw new Error('expected an FsError');
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

// ---- names ----

test('componentBytes accepts one component and refuses everything else', (t) => {
  t.deepEqual(componentBytes('a.txt', 'x'), enc.encode('a.txt'));
  t.deepEqual(componentBytes(new Uint8Array([0xff, 0xfe]), 'x'), new Uint8Array([0xff, 0xfe]), 'not UTF-8: kept as bytes');
  t.deepEqual(componentBytes('...', 'x'), enc.encode('...'));
  for (const bad of ['', '.', '..', 'a/b', '/', '/etc', '../x', 'a\0b', 'x'.repeat(256)]) {
    t.throws(() => componentBytes(bad, 'x'), { instanceOf: FsError }, JSON.stringify(bad));
  }
  t.notThrows(() => componentBytes('x'.repeat(255), 'x'));
});

test('kindOf and sanitizePerm', (t) => {
  t.is(kindOf(S.S_IFDIR | 0o755), 'dir');
  t.is(kindOf(S.S_IFREG), 'file');
  t.is(kindOf(S.S_IFLNK), 'symlink');
  t.is(kindOf(S.S_IFIFO), 'fifo');
  t.is(kindOf(S.S_IFSOCK), 'socket');
  t.is(kindOf(S.S_IFCHR), 'chr');
  t.is(kindOf(S.S_IFBLK), 'blk');
  t.is(sanitizePerm(0o7777, false), 0o1777);
  t.is(sanitizePerm(0o7777, true), 0o3777);
  t.is(sanitizePerm(0o170644, false), 0o644, 'type bits dropped');
});

// ---- the node table ----

test('lookup shares one node per inode, counts references, and release closes the fd', withShare({}, (t, { fs, share }) => {
  mkdirSync(join(share, 'd'));
  writeFileSync(join(share, 'd/f'), 'x');
  const d1 = fs.lookup(fs.root, 'd');
  const d2 = fs.lookup(fs.root, 'd');
  t.is(d1, d2);
  t.is(d1.refs, 2);
  const f = fs.lookup(d1, 'f');
  t.is(f.parent, d1);
  t.is(d1.refs, 3, 'the child holds a reference on its parent');
  t.is(fs.nodeCount, 3);
  fs.release(d1);
  fs.release(d2);
  t.is(fs.nodeCount, 3, 'd lives on: f holds it');
  fs.release(f);
  t.is(fs.nodeCount, 1, 'releasing f releases d too');
  t.is(fs.fdsInUse, 0);
  t.throws(() => fs.release(f), { message: /released more often/ });
}));

test('parent() answers ".." from the table; the root is its own parent; files have none', withShare({}, (t, { fs, share }) => {
  mkdirSync(join(share, 'a/b'), { recursive: true });
  writeFileSync(join(share, 'f'), '');
  const a = fs.lookup(fs.root, 'a');
  const b = fs.lookup(a, 'b');
  const up = fs.parent(b);
  t.is(up, a);
  t.is(fs.parent(fs.root), fs.root);
  const f = fs.lookup(fs.root, 'f');
  t.is(errnoOf(() => fs.parent(f)), S.ENOTDIR);
  for (const n of [a, b, up, f]) fs.release(n);
  fs.release(fs.root);
}));

test('NodeTable.setParent never makes a node its own ancestor', (t) => {
  const mk = (name: string, parent: TableNode | null) => new TableNode(-1, '0:0', BigInt(name.charCodeAt(0)), 0n, 'dir', parent, enc.encode(name));
  const root = mk('r', null);
  const table = new NodeTable(root);
  const a = mk('a', root);
  const b = mk('b', a);
  table.add(a);
  table.add(b);
  root.refs = 2; // itself + a
  a.refs = 2; // itself + b
  table.setParent(a, b, enc.encode('a2'));
  t.is(a.parent, root, 'a under its own child b would be a cycle');
  t.deepEqual(a.name, enc.encode('a2'));
  table.setParent(b, root, enc.encode('b2'));
  t.is(b.parent, root);
  t.is(root.refs, 3, 'b now holds the root');
  t.is(a.refs, 1, 'and no longer a');
});

test('rename moves the node in the table (".." follows), and renameNode/remove check the name still means the inode', withShare({}, (t, { fs, share }) => {
  mkdirSync(join(share, 'a'));
  mkdirSync(join(share, 'b'));
  mkdirSync(join(share, 'a/sub'));
  const a = fs.lookup(fs.root, 'a');
  const b = fs.lookup(fs.root, 'b');
  const sub = fs.lookup(a, 'sub');
  fs.rename(a, 'sub', b, 'moved');
  t.is(sub.parent, b);
  t.deepEqual(sub.name, enc.encode('moved'));
  const up = fs.parent(sub);
  t.is(up, b);
  fs.renameNode(sub, fs.root, 'top');
  t.true(existsSync(join(share, 'top')));
  // Swapped on the host: the fid's name now means another inode.
  renameSync(join(share, 'top'), join(share, 'top.old'));
  mkdirSync(join(share, 'top'));
  t.is(errnoOf(() => fs.renameNode(sub, fs.root, 'x')), S.ESTALE);
  t.is(errnoOf(() => fs.remove(sub)), S.ESTALE);
  t.is(errnoOf(() => fs.remove(fs.root)), S.EBUSY);
  t.is(errnoOf(() => fs.rename(fs.root, 'b', fs.root, 'c', S.RENAME_WHITEOUT)), S.EINVAL);
  writeFileSync(join(share, 'a/marker'), '');
  fs.rename(fs.root, 'a', fs.root, 'b', S.RENAME_EXCHANGE);
  t.true(existsSync(join(share, 'b/marker')), 'exchanged');
  t.is(a.parent, fs.root);
  t.deepEqual(a.name, enc.encode('b'), 'both nodes follow an exchange');
  t.deepEqual(b.name, enc.encode('a'));
  for (const n of [a, b, sub, up]) fs.release(n);
}));

// ---- sandbox ----

test('lookups return symlinks as themselves; nothing is reached through them', withShare({}, (t, { fs }) => {
  const abs = fs.lookup(fs.root, 'abs');
  t.is(abs.kind, 'symlink');
  t.is(dec.decode(fs.readlink(abs)), '/etc');
  t.is(errnoOf(() => fs.lookup(abs, 'passwd')), S.ENOTDIR);
  t.is(errnoOf(() => fs.open(abs, { access: 'read' })), S.ELOOP);
  t.is(errnoOf(() => fs.lookup(fs.root, '..')), S.EINVAL);
  t.is(errnoOf(() => fs.lookup(fs.root, '../outside')), S.EINVAL);
  t.is(fs.stat(abs).kind, 'symlink', 'stat does not follow');
  fs.release(abs);
}, (share) => {
  symlinkSync('/etc', join(share, 'abs'));
}));

test('create never opens what already sits at the name: FIFO (would block), device, symlink, directory', withShare({}, (t, { fs }) => {
  t.is(errnoOf(() => fs.create(fs.root, 'fifo', { access: 'write' }, 0o644, undefined, false)), S.EPERM);
  t.is(errnoOf(() => fs.create(fs.root, 'link', { access: 'write', truncate: true }, 0o644, undefined, false)), S.ELOOP);
  t.is(errnoOf(() => fs.create(fs.root, 'dir', { access: 'read' }, 0o644, undefined, false)), S.EISDIR);
  t.is(errnoOf(() => fs.create(fs.root, 'fifo', { access: 'write' }, 0o644, undefined, true)), S.EEXIST);
  t.false(existsSync('/tmp/flintvm-should-not-exist'));
}, (share) => {
  S.mknodat(S.AT_FDCWD, S_cstr(join(share, 'fifo')), S.S_IFIFO | 0o644, 0n);
  symlinkSync('/tmp/flintvm-should-not-exist', join(share, 'link'));
  mkdirSync(join(share, 'dir'));
}));

test('create: the exact mode despite the umask, the owner asked for, and an O_PATH node (no ETXTBSY on the host)', withShare({}, (t, { fs, share }) => {
  const { node, file } = fs.create(fs.root, 'x', { access: 'readwrite' }, 0o777, { uid: 321, gid: 654 }, true);
  const st = statSync(join(share, 'x'));
  t.is(st.mode & 0o7777, 0o777);
  t.is(st.uid, 321);
  t.is(st.gid, 654);
  t.is(node.kind, 'file');
  const flags = readFileSync(`/proc/self/fdinfo/${node.fd}`, 'utf8');
  t.regex(flags, new RegExp(`flags:\\s*0*${(S.O_PATH | S.O_CLOEXEC).toString(8)}`), 'the node fd is O_PATH');
  fs.close(file);
  fs.release(node);
}));

test('mkdir / symlink / mknod: nodes back, modes exact, devices refused', withShare({}, (t, { fs, share }) => {
  const d = fs.mkdir(fs.root, 'd', 0o2775);
  t.is(statSync(join(share, 'd')).mode & 0o7777, 0o2775);
  const l = fs.symlink(d, 'l', 'target');
  t.is(l.kind, 'symlink');
  const p = fs.mknod(d, 'p', S.S_IFIFO | 0o600);
  t.is(lstatSync(join(share, 'd/p')).mode & 0o7777, 0o600);
  const r = fs.mknod(d, 'r', 0o640);
  t.is(r.kind, 'file', 'type 0 means a regular file');
  t.is(errnoOf(() => fs.mknod(d, 'c', S.S_IFCHR | 0o666)), S.EPERM);
  t.is(errnoOf(() => fs.mknod(d, 'b', S.S_IFBLK | 0o666)), S.EPERM);
  t.is(errnoOf(() => fs.symlink(d, 'empty', '')), S.EINVAL);
  t.is(errnoOf(() => fs.symlink(d, 'long', 'x'.repeat(4096))), S.ENAMETOOLONG);
  for (const n of [d, l, p, r]) fs.release(n);
}));

// ---- I/O ----

test('open, read, write (buffers and guest memory), close; directories are opened read-only', withShare({}, (t, { fs, share }) => {
  writeFileSync(join(share, 'f'), 'hello world');
  const n = fs.lookup(fs.root, 'f');
  const r = fs.open(n, { access: 'read' });
  const buf = new Uint8Array(64);
  t.is(fs.read(r, 6n, buf), 5);
  t.is(dec.decode(buf.subarray(0, 5)), 'world');
  t.is(errnoOf(() => fs.write(r, 0n, enc.encode('x'))), S.EBADF);
  const w = fs.open(n, { access: 'readwrite', append: true });
  fs.write(w, 0n, enc.encode('!'));
  t.is(readFileSync(join(share, 'f'), 'utf8'), 'hello world!');
  const { memory, unmap } = mapGuestMemory([{ gpa: 0, size: 1 << 20 }]);
  try {
    memory.write(0x1000, enc.encode('GUEST'));
    const seg = [{ addr: 0x1000, len: 3 }, { addr: 0x1003, len: 2 }];
    const w2 = fs.open(n, { access: 'write' });
    t.is(fs.writev(w2, 0n, memory, seg), 5);
    t.is(fs.readv(r, 0n, memory, [{ addr: 0x2000, len: 100 }]), 12);
    t.is(dec.decode(memory.read(0x2000, 12)), 'GUEST world!');
    fs.close(w2);
  } finally {
    unmap();
  }
  t.is(errnoOf(() => fs.open(fs.root, { access: 'write' })), S.EISDIR);
  t.is(errnoOf(() => fs.open(n, { access: 'read', directory: true })), S.ENOTDIR);
  fs.close(r);
  fs.close(w);
  fs.close(w);
  t.is(errnoOf(() => fs.read(r, 0n, buf)), S.EBADF, 'closed');
  fs.release(n);
}));

test('an open-unlinked file still works; re-opening a node goes to its own inode', withShare({}, (t, { fs, share }) => {
  writeFileSync(join(share, 'f'), 'keep me');
  const n = fs.lookup(fs.root, 'f');
  rmSync(join(share, 'f'));
  writeFileSync(join(share, 'f'), 'a different file');
  const o = fs.open(n, { access: 'read' });
  const buf = new Uint8Array(32);
  t.is(dec.decode(buf.subarray(0, fs.read(o, 0n, buf))), 'keep me');
  fs.setattr(n, { size: 4n });
  t.is(fs.stat(n).size, 4n);
  t.is(readFileSync(join(share, 'f'), 'utf8'), 'a different file');
  fs.close(o);
  fs.release(n);
}));

test('readdir: cookies resume, "." and ".." carry table ids, the visitor can stop', withShare({}, (t, { fs, share }) => {
  for (let i = 0; i < 300; i++) writeFileSync(join(share, `e${i}`), '');
  const d = fs.open(fs.root, { access: 'read' });
  const names: string[] = [];
  let cookie = 0n;
  for (;;) {
    let got = 0;
    fs.readdir(d, cookie, (e) => {
      names.push(dec.decode(e.name));
      cookie = e.offset;
      if (e.name.length === 1 && e.name[0] === 0x2e) t.is(e.id, fs.root.id);
      if (dec.decode(e.name) === '..') t.is(e.id, fs.root.id, '".." of the root is the root');
      return ++got < 7;
    });
    if (got === 0) break;
  }
  t.is(names.length, 302);
  t.is(new Set(names).size, 302);
  fs.close(d);
}));

test('setattr: mode, owner, size, times; symlinks refuse chmod/truncate', withShare({}, (t, { fs, share }) => {
  writeFileSync(join(share, 'f'), 'x'.repeat(10));
  symlinkSync('f', join(share, 'l'));
  const f = fs.lookup(fs.root, 'f');
  const l = fs.lookup(fs.root, 'l');
  fs.setattr(f, { mode: 0o4711, uid: 1, gid: 2, size: 3n, atime: { sec: 10n, nsec: 1 }, mtime: 'now' });
  const st = statSync(join(share, 'f'), { bigint: true });
  t.is(Number(st.mode) & 0o7777, 0o711, 'set-user-ID dropped');
  t.is(st.uid, 1n);
  t.is(st.size, 3n);
  t.is(st.atimeNs, 10_000_000_001n);
  t.is(errnoOf(() => fs.setattr(l, { mode: 0o777 })), S.EOPNOTSUPP);
  t.is(errnoOf(() => fs.setattr(l, { size: 0n })), S.EINVAL);
  t.is(errnoOf(() => fs.setattr(f, { atime: { sec: 0n, nsec: -1 } })), S.EINVAL);
  fs.setattr(l, { uid: 7 });
  t.is(lstatSync(join(share, 'l')).uid, 7);
  t.is(statSync(join(share, 'f')).uid, 1, 'the target kept its owner');
  fs.release(f);
  fs.release(l);
}));

test('xattr policy: user.* and POSIX ACLs writable; trusted.*, security.* refused; symlinks have none', withShare({}, (t, { fs, share }) => {
  writeFileSync(join(share, 'f'), '');
  symlinkSync('f', join(share, 'l'));
  const f = fs.lookup(fs.root, 'f');
  const l = fs.lookup(fs.root, 'l');
  fs.setxattr(f, 'user.k', enc.encode('v'), 0);
  t.is(dec.decode(fs.getxattr(f, 'user.k')), 'v');
  t.is(dec.decode(fs.listxattr(f)), 'user.k\0');
  fs.removexattr(f, 'user.k');
  t.is(errnoOf(() => fs.getxattr(f, 'user.k')), S.ENODATA);
  for (const name of ['trusted.x', 'security.capability', 'security.selinux', 'security.ima']) t.is(errnoOf(() => fs.setxattr(f, name, enc.encode('1'), 0)), S.EPERM, name);
  t.is(errnoOf(() => fs.removexattr(f, 'trusted.x')), S.EPERM);
  t.is(errnoOf(() => fs.setxattr(f, 'os2.x', enc.encode('1'), 0)), S.EOPNOTSUPP);
  t.is(errnoOf(() => fs.setxattr(f, 'user.', enc.encode('1'), 0)), S.EOPNOTSUPP);
  t.is(errnoOf(() => fs.setxattr(f, 'user.big', new Uint8Array(65537), 0)), S.E2BIG);
  t.is(errnoOf(() => fs.setxattr(f, 'user.k', enc.encode('1'), 4)), S.EINVAL, 'unknown flags');
  t.is(errnoOf(() => fs.setxattr(f, 'x'.repeat(256), enc.encode('1'), 0)), S.ERANGE);
  t.is(errnoOf(() => fs.getxattr(l, 'user.k')), S.ENODATA);
  t.is(fs.listxattr(l).length, 0);
  t.is(errnoOf(() => fs.setxattr(l, 'user.k', enc.encode('1'), 0)), S.EPERM);
  t.is(errnoOf(() => fs.checkSetxattr(f, 'trusted.y')), S.EPERM);
  t.notThrows(() => fs.checkSetxattr(f, 'user.y'));
  fs.release(f);
  fs.release(l);
}));

test('xattr reads go to the node\'s own inode: a directory, and a file renamed and replaced under its old name', withShare({}, (t, { fs, share }) => {
  mkdirSync(join(share, 'd'));
  writeFileSync(join(share, 'f'), '');
  const d = fs.lookup(fs.root, 'd');
  const f = fs.lookup(fs.root, 'f');
  fs.setxattr(d, 'user.dir', enc.encode('D'), 0);
  fs.setxattr(f, 'user.file', enc.encode('F'), 0);
  t.is(dec.decode(fs.getxattr(d, 'user.dir')), 'D');
  t.is(dec.decode(fs.listxattr(d)), 'user.dir\0');
  renameSync(join(share, 'f'), join(share, 'g'));
  writeFileSync(join(share, 'f'), 'another file');
  t.is(dec.decode(fs.getxattr(f, 'user.file')), 'F', 'the looked-up file, not whatever is named f now');
  t.is(dec.decode(fs.listxattr(f)), 'user.file\0');
  fs.release(d);
  fs.release(f);
}));

test('locks, lseek (DATA/HOLE), fallocate modes, fsync', withShare({}, (t, { fs, share }) => {
  writeFileSync(join(share, 'f'), '');
  const n = fs.lookup(fs.root, 'f');
  const a = fs.open(n, { access: 'readwrite' });
  const b = fs.open(n, { access: 'readwrite' });
  t.true(fs.setlk(a, { type: S.F_WRLCK, start: 0n, length: 0n }));
  t.false(fs.setlk(b, { type: S.F_RDLCK, start: 100n, length: 1n }));
  t.is(fs.getlk(b, { type: S.F_RDLCK, start: 0n, length: 1n }).type, S.F_WRLCK);
  t.is(fs.getlk(a, { type: S.F_RDLCK, start: 0n, length: 1n }).type, S.F_UNLCK);
  t.is(errnoOf(() => fs.setlk(a, { type: 9, start: 0n, length: 0n })), S.EINVAL);
  t.is(errnoOf(() => fs.setlk(a, { type: S.F_RDLCK, start: (1n << 63n) - 1n, length: 2n })), S.EOVERFLOW);
  fs.fallocate(a, 0, 0n, 1n << 20n);
  t.is(statSync(join(share, 'f')).size, 1 << 20);
  fs.fallocate(a, 0x3, 0n, 4096n);
  t.is(errnoOf(() => fs.fallocate(a, 0x8 /* COLLAPSE_RANGE */, 0n, 4096n)), S.EOPNOTSUPP);
  t.is(errnoOf(() => fs.fallocate(a, 0, -1n, 1n)), S.EINVAL);
  fs.write(a, 8192n, enc.encode('data'));
  const data = fs.lseek(a, 0n, S.SEEK_DATA);
  t.true(data >= 0n);
  t.is(errnoOf(() => fs.lseek(a, 0n, 7)), S.EINVAL);
  fs.fsync(a, false);
  fs.fsync(a, true);
  fs.close(a);
  fs.close(b);
  fs.release(n);
}));

// ---- read-only, budgets ----

test('a read-only share refuses every mutating call with EROFS and touches nothing', withShare({ readOnly: true }, (t, { fs, share }) => {
  const before = JSON.stringify(readdirSync(share).sort()) + statSync(join(share, 'f')).mtimeMs;
  const f = fs.lookup(fs.root, 'f');
  const d = fs.lookup(fs.root, 'd');
  const o = fs.open(f, { access: 'read' });
  const calls: [string, () => unknown][] = [
    ['open write', () => fs.open(f, { access: 'write' })],
    ['open truncate', () => fs.open(f, { access: 'read', truncate: true })],
    ['create', () => fs.create(fs.root, 'n', { access: 'write' }, 0o644, undefined, false)],
    ['mkdir', () => fs.mkdir(fs.root, 'n', 0o755)],
    ['symlink', () => fs.symlink(fs.root, 'n', 'x')],
    ['mknod', () => fs.mknod(fs.root, 'n', S.S_IFIFO | 0o644)],
    ['link', () => fs.link(f, d, 'n')],
    ['unlink', () => fs.unlink(fs.root, 'f', false)],
    ['remove', () => fs.remove(f)],
    ['rename', () => fs.rename(fs.root, 'f', d, 'f')],
    ['renameNode', () => fs.renameNode(f, d, 'f')],
    ['setattr', () => fs.setattr(f, { mode: 0o777 })],
    ['setattr empty', () => fs.setattr(f, {})],
    ['write', () => fs.write(o, 0n, enc.encode('x'))],
    ['fallocate', () => fs.fallocate(o, 0, 0n, 1n)],
    ['setxattr', () => fs.setxattr(f, 'user.x', enc.encode('1'), 0)],
    ['removexattr', () => fs.removexattr(f, 'user.x')],
    ['checkSetxattr', () => fs.checkSetxattr(f, 'user.x')],
  ];
  for (const [name, call] of calls) t.is(errnoOf(call), S.EROFS, name);
  t.is(JSON.stringify(readdirSync(share).sort()) + statSync(join(share, 'f')).mtimeMs, before);
  fs.close(o);
  fs.release(f);
  fs.release(d);
}, (share) => {
  writeFileSync(join(share, 'f'), 'ro');
  mkdirSync(join(share, 'd'));
}));

test('the fd budget: EMFILE past maxFds, and lookups of held inodes still work', withShare({ maxFds: 4 }, (t, { fs, share }) => {
  for (let i = 0; i < 6; i++) writeFileSync(join(share, `f${i}`), '');
  const held: Node[] = [];
  for (let i = 0; i < 4; i++) held.push(fs.lookup(fs.root, `f${i}`));
  t.is(errnoOf(() => fs.lookup(fs.root, 'f5')), S.EMFILE);
  const again = fs.lookup(fs.root, 'f0');
  t.is(again, held[0]);
  t.is(errnoOf(() => fs.open(held[1]!, { access: 'read' })), S.EMFILE);
  fs.release(again);
  for (const n of held) fs.release(n);
  const files: OpenFile[] = [];
  const n = fs.lookup(fs.root, 'f0');
  for (let i = 0; i < 3; i++) files.push(fs.open(n, { access: 'read' }));
  t.is(fs.fdsInUse, 4);
  for (const f of files) fs.close(f);
  fs.release(n);
  t.is(fs.fdsInUse, 0);
}));

test('the default fd budget is a quarter of RLIMIT_NOFILE within 256..65536', withShare({}, (t, { fs }) => {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const soft = Number(/Max open files\s+(\d+)/.exec(limits)![1]);
  t.is(fs.maxFds, Math.max(256, Math.min(65536, Math.floor(soft / 4))));
}));

// ---- openHostDir ----

test('openHostDir: O_PATH directory fd; clear ConfigErrors otherwise', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-hostdir-open-'));
  try {
    writeFileSync(join(dir, 'f'), '');
    const h = openHostDir(dir, { readOnly: true, field: 'shares[1].path' });
    t.true(h.readOnly);
    t.regex(readFileSync(`/proc/self/fdinfo/${h.rootFd}`, 'utf8'), new RegExp(`flags:\\s*0*${(S.O_PATH | S.O_DIRECTORY | S.O_CLOEXEC).toString(8)}`));
    h.close();
    h.close();
    t.throws(() => openHostDir(join(dir, 'nope'), { readOnly: false, field: 'shares[1].path' }), { instanceOf: ConfigError, message: /shares\[1\]\.path: directory .* does not exist/ });
    t.throws(() => openHostDir(join(dir, 'f'), { readOnly: false, field: 'p' }), { instanceOf: ConfigError, message: /not a directory/ });
    t.throws(() => openHostDir('', { readOnly: false, field: 'p' }), { instanceOf: ConfigError });
    // The openat2 probe's error: EBADF from a closed fd stands in for a kernel that refuses.
    t.throws(() => checkOpenat2(9999, dir, 'p'), { instanceOf: ConfigError, message: /openat2 on .* failed: EBADF/ });
    t.regex(openat2Error(S.ENOSYS, dir, 'shares[0].path').message, /^shares\[0\]\.path: sharing a directory needs the openat2\(2\) system call \(Linux 5\.6 or later\), which this kernel does not have/);
    t.regex(openat2Error(S.EPERM, dir, 'p').message, /seccomp/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the HostDir constructor refuses a root that is not a directory', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-hostdir-ctor-'));
  try {
    writeFileSync(join(dir, 'f'), '');
    const fd = S.openat(S.AT_FDCWD, S_cstr(join(dir, 'f')), S.O_PATH | S.O_CLOEXEC, 0);
    t.throws(() => new HostDir(fd, { readOnly: false }), { instanceOf: FsError, message: /not a directory/ });
    S.close(fd);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function S_cstr(s: string): Uint8Array {
  const b = enc.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}
