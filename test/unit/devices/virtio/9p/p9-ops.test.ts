/**
 * virtio-9p end to end without KVM: every 9P2000.L message the server knows,
 * round trip, against a real temp directory whose contents the tests check
 * from the host side.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { bytes, hostSetxattr, MSIZE, P9Harness, ROOT_FID, snapshot, text, withHarness } from './p9-harness.js';

type T = ExecutionContext;
const ENOENT = 2;
const EBADF = 9;
const EEXIST = 17;
const ENOTDIR = 20;
const EISDIR = 21;
const EINVAL = 22;
const ENOTEMPTY = 39;
const ENODATA = 61;
const EOPNOTSUPP = 95;
const EROFS = 30;

/** Bytes 0..n-1 of a recognisable pattern. */
function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

// ---- session ----

test('Tversion negotiates msize (capped at 512 KiB) and 9P2000.L; other versions get "unknown"', withHarness({ raw: true }, (h, t: T) => {
  t.deepEqual(h.version(8192), { msize: 8192, version: '9P2000.L' });
  t.deepEqual(h.version(4 << 20), { msize: P.P9_MAX_MSIZE, version: '9P2000.L' });
  t.deepEqual(h.version(8192, '9P2000.L.extension'), { msize: 8192, version: '9P2000.L' });
  t.is(h.version(8192, '9P2000.u').version, 'unknown');
  t.is(h.errno(() => h.attach(ROOT_FID)), EINVAL, 'no session after an unknown version');
  t.is(h.errno(() => h.version(100)), EINVAL, 'msize below 4096');
  h.version();
  t.is(h.attach(ROOT_FID).type, P.P9_QTDIR);
}));

test('Tversion starts a new session: every fid is clunked', withHarness({}, (h, t: T) => {
  const f = h.walkTo();
  t.is(h.server.fids.size, 2);
  h.version();
  t.is(h.server.fids.size, 0);
  t.is(h.errno(() => h.walk(f, h.fid(), [])), EBADF);
  t.is(h.fs.fdsInUse, 0);
}));

test('Tattach: the root qid whatever aname says; afid must be NOFID; fids must be free', withHarness({}, (h, t: T) => {
  const root = h.attach(h.fid(), 1000, '/etc');
  t.is(root.type, P.P9_QTDIR);
  t.is(root.path, BigInt(statSync(h.share).ino));
  t.is(h.errno(() => h.attach(ROOT_FID)), EINVAL, 'fid in use');
  t.is(h.errno(() => h.call(P.P9_TATTACH, (w) => w.u32(h.fid()).u32(5).str(bytes('u')).str(bytes('')).u32(0))), EINVAL, 'afid');
  t.is(h.errno(() => h.call(P.P9_TAUTH, (w) => w.u32(h.fid()).str(bytes('u')).str(bytes('')).u32(0))), EOPNOTSUPP);
}));

test('Tflush answers Rflush', withHarness({}, (h, t: T) => {
  const r = h.send(P.P9_TFLUSH, (w) => w.u16(7));
  t.is(r.type, P.P9_RFLUSH);
  t.is(r.size, 7);
}));

// ---- walk ----

test('Twalk: clone, multi-name walk, "..", and partial walks', withHarness({}, (h, t: T) => {
  mkdirSync(join(h.share, 'a/b/c'), { recursive: true });
  writeFileSync(join(h.share, 'a/b/c/f'), 'x');
  const f = h.fid();
  const q = h.walk(ROOT_FID, f, ['a', 'b', 'c', 'f']);
  t.deepEqual(q.map((x) => x.type), [P.P9_QTDIR, P.P9_QTDIR, P.P9_QTDIR, P.P9_QTFILE]);
  t.is(q[3]!.path, BigInt(statSync(join(h.share, 'a/b/c/f')).ino));
  // Partial: 2 of 3 names walk; newfid is not bound.
  const g = h.fid();
  const partial = h.walk(ROOT_FID, g, ['a', 'b', 'missing']);
  t.is(partial.length, 2);
  t.is(h.errno(() => h.walk(g, h.fid(), [])), EBADF, 'newfid not bound after a partial walk');
  // First name fails: Rlerror.
  t.is(h.errno(() => h.walk(ROOT_FID, h.fid(), ['missing'])), ENOENT);
  // ".." goes up through the table.
  const up = h.fid();
  const ups = h.walk(ROOT_FID, up, ['a', 'b', '..', '..', 'a']);
  t.is(ups[2]!.path, BigInt(statSync(join(h.share, 'a')).ino));
  t.is(ups[3]!.path, BigInt(statSync(h.share).ino));
  // newfid == fid replaces the fid in place; with no names it changes nothing (an open fid stays open).
  h.walk(up, up, ['b']);
  const o = h.walkTo('a/b/c/f'.split('/')[0]!, 'b', 'c', 'f');
  h.lopen(o, P.P9_DOTL_RDONLY);
  t.deepEqual(h.walk(o, o, []), []);
  t.is(text(h.read(o, 0, 10)), 'x');
  t.is(h.getattr(up).qid.path, BigInt(statSync(join(h.share, 'a/b')).ino));
  // Clone (no names) of the root.
  const c = h.fid();
  t.deepEqual(h.walk(ROOT_FID, c, []), []);
  t.is(h.getattr(c).qid.type, P.P9_QTDIR);
  // Walking through a file.
  t.is(h.errno(() => h.walk(f, h.fid(), ['x'])), ENOTDIR);
  // 16 names is the limit.
  t.is(h.errno(() => h.walk(ROOT_FID, h.fid(), Array(17).fill('a'))), EINVAL);
  t.is(h.walk(ROOT_FID, h.fid(), Array(16).fill('..')).length, 16);
}));

test('Twalk of the same directory twice shares one backend node', withHarness({}, (h, t: T) => {
  mkdirSync(join(h.share, 'd'));
  const before = h.fs.nodeCount;
  const a = h.walkTo('d');
  const b = h.walkTo('d');
  t.is(h.fs.nodeCount, before + 1);
  h.clunk(a);
  t.is(h.fs.nodeCount, before + 1);
  h.clunk(b);
  t.is(h.fs.nodeCount, before);
  t.is(h.fs.fdsInUse, 0);
}));

// ---- files ----

test('Tlcreate + Twrite + Tread round trip, the host sees the bytes', withHarness({}, (h, t: T) => {
  const f = h.walkTo();
  const qid = h.lcreate(f, 'new.txt', P.P9_DOTL_RDWR | P.P9_DOTL_CREATE, 0o640, 0);
  t.is(qid.type, P.P9_QTFILE);
  t.is(h.write(f, 0, bytes('hello, 9p')), 9);
  t.is(text(h.read(f, 0, 100)), 'hello, 9p');
  t.is(text(h.read(f, 7, 100)), '9p');
  t.is(h.read(f, 1000, 100).length, 0, 'EOF');
  t.is(readFileSync(join(h.share, 'new.txt'), 'utf8'), 'hello, 9p');
  t.is(statSync(join(h.share, 'new.txt')).mode & 0o7777, 0o640, 'exact mode despite the umask');
  h.clunk(f);
  t.is(h.fs.fdsInUse, 0);
}));

test('large zero-copy reads and writes across many descriptors and odd offsets', withHarness({}, (h, t: T) => {
  const data = pattern(MSIZE - P.P9_IOHDRSZ, 5);
  const f = h.walkTo();
  h.lcreate(f, 'big', P.P9_DOTL_RDWR, 0o644);
  // Linux's zero-copy Twrite: 23-byte header, then data pages.
  const cuts = [P.P9_TWRITE_HEADER, 100, 4096 + 23, 70000, 200000];
  t.is(h.write(f, 3, data, { splitOut: cuts }), data.length);
  const host = readFileSync(join(h.share, 'big'));
  t.deepEqual(new Uint8Array(host.subarray(3)), data);
  // Linux's zero-copy Tread: an 11-byte header area, then the pages.
  const back = h.read(f, 3, data.length, { replyLen: P.P9_IOHDR_REPLY + data.length, splitIn: [P.P9_IOHDR_REPLY, 4096 + 11, 100000] });
  t.deepEqual(back, data);
  // Indirect descriptors too.
  const again = h.read(f, 3, 1000, { splitIn: [11, 500], indirect: false });
  t.deepEqual(again, data.subarray(0, 1000));
}));

test('Tread is cut to the reply buffer and msize', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), Buffer.from(pattern(100_000)));
  const f = h.walkTo('f');
  h.lopen(f, P.P9_DOTL_RDONLY);
  t.is(h.read(f, 0, 100_000, { replyLen: 11 + 1000 }).length, 1000);
  t.is(h.read(f, 0, 0xffff_ffff).length, Math.min(100_000, MSIZE - 1 - 11));
  t.is(h.read(f, 0, 5, { replyLen: 11 }).length, 0, 'room only for the header');
}));

test('Tlopen flags: append, truncate, read-only fids refuse writes, directories refuse write opens', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'abc');
  const a = h.walkTo('f');
  h.lopen(a, P.P9_DOTL_WRONLY | P.P9_DOTL_APPEND);
  h.write(a, 0, bytes('def'));
  t.is(readFileSync(join(h.share, 'f'), 'utf8'), 'abcdef', 'O_APPEND appends whatever the offset');
  const b = h.walkTo('f');
  h.lopen(b, P.P9_DOTL_RDWR | P.P9_DOTL_TRUNC);
  t.is(statSync(join(h.share, 'f')).size, 0);
  const r = h.walkTo('f');
  h.lopen(r, P.P9_DOTL_RDONLY);
  t.is(h.errno(() => h.write(r, 0, bytes('x'))), EBADF);
  t.is(h.errno(() => h.lopen(r, P.P9_DOTL_RDONLY)), EINVAL, 'already open');
  const d = h.walkTo();
  t.is(h.errno(() => h.lopen(d, P.P9_DOTL_WRONLY)), EISDIR);
  t.is(h.errno(() => h.lopen(h.walkTo('f'), P.P9_DOTL_RDONLY | P.P9_DOTL_DIRECTORY)), ENOTDIR);
  t.is(h.errno(() => h.lopen(h.walkTo('f'), P.P9_DOTL_NOACCESS)), EINVAL);
  const u = h.walkTo('f');
  t.is(h.errno(() => h.read(u, 0, 10)), EBADF, 'Tread on an unopened fid');
}));

test('Tlcreate: O_EXCL on an existing file is EEXIST; without it the file is opened (and truncated)', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'old contents');
  t.is(h.errno(() => h.lcreate(h.walkTo(), 'f', P.P9_DOTL_WRONLY | P.P9_DOTL_CREATE | P.P9_DOTL_EXCL, 0o644)), EEXIST);
  const f = h.walkTo();
  h.lcreate(f, 'f', P.P9_DOTL_WRONLY | P.P9_DOTL_CREATE | P.P9_DOTL_TRUNC, 0o644);
  t.is(statSync(join(h.share, 'f')).size, 0);
  mkdirSync(join(h.share, 'd'));
  t.is(h.errno(() => h.lcreate(h.walkTo(), 'd', P.P9_DOTL_WRONLY, 0o644)), EISDIR);
  const file = h.walkTo('f');
  t.is(h.errno(() => h.lcreate(file, 'x', P.P9_DOTL_WRONLY, 0o644)), ENOTDIR);
}));

test('Tlcreate applies the attach uid and the given gid as owner', withHarness({ raw: true }, (h, t: T) => {
  h.version();
  h.attach(ROOT_FID, 1234);
  const f = h.walkTo();
  h.lcreate(f, 'owned', P.P9_DOTL_WRONLY, 0o600, 4321);
  const st = statSync(join(h.share, 'owned'));
  t.is(st.uid, 1234);
  t.is(st.gid, 4321);
  h.mkdir(ROOT_FID, 'dir', 0o755, 77);
  t.is(statSync(join(h.share, 'dir')).uid, 1234);
  t.is(statSync(join(h.share, 'dir')).gid, 77);
}));

// ---- directories ----

test('Tmkdir, Treaddir (cookies resume a listing), Tunlinkat of files and directories', withHarness({}, (h, t: T) => {
  t.is(h.mkdir(ROOT_FID, 'dir', 0o750).type, P.P9_QTDIR);
  t.is(statSync(join(h.share, 'dir')).mode & 0o7777, 0o750);
  const names = Array.from({ length: 500 }, (_, i) => `file-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`);
  for (const n of names) writeFileSync(join(h.share, 'dir', n), n);
  const d = h.walkTo('dir');
  h.lopen(d, P.P9_DOTL_RDONLY);
  const seen: string[] = [];
  let off = 0n;
  let calls = 0;
  for (;;) {
    const ents = h.readdir(d, off, 2000); // small counts: many resumes
    calls++;
    if (ents.length === 0) break;
    for (const e of ents) {
      seen.push(e.name);
      if (e.name === 'dir' || e.name.startsWith('file-')) t.is(e.type, 8);
    }
    off = ents[ents.length - 1]!.offset;
  }
  t.true(calls > 10);
  t.deepEqual(seen.filter((n) => n !== '.' && n !== '..').sort(), names);
  t.true(seen.includes('.') && seen.includes('..'));
}));

test('Tunlinkat: AT_REMOVEDIR for directories, errors otherwise', withHarness({}, (h, t: T) => {
  mkdirSync(join(h.share, 'd'));
  writeFileSync(join(h.share, 'd/f'), '');
  writeFileSync(join(h.share, 'f'), '');
  t.is(h.errno(() => h.unlinkat(ROOT_FID, 'd', P.P9_DOTL_AT_REMOVEDIR)), ENOTEMPTY);
  t.is(h.errno(() => h.unlinkat(ROOT_FID, 'd', 0)), EISDIR);
  t.is(h.errno(() => h.unlinkat(ROOT_FID, 'f', P.P9_DOTL_AT_REMOVEDIR)), ENOTDIR);
  t.is(h.errno(() => h.unlinkat(ROOT_FID, 'f', 0x1)), EINVAL, 'unknown flags');
  const d = h.walkTo('d');
  h.unlinkat(d, 'f');
  h.unlinkat(ROOT_FID, 'd', P.P9_DOTL_AT_REMOVEDIR);
  h.unlinkat(ROOT_FID, 'f');
  t.false(existsSync(join(h.share, 'd')));
  t.false(existsSync(join(h.share, 'f')));
}));

test('Treaddir: ".." of the root is the root, and the entry qids are the inodes', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  symlinkSync('f', join(h.share, 'l'));
  const d = h.walkTo();
  h.lopen(d, P.P9_DOTL_RDONLY);
  const ents = h.readdir(d, 0n, 8192);
  const by = new Map(ents.map((e) => [e.name, e]));
  const rootIno = BigInt(statSync(h.share).ino);
  t.is(by.get('.')!.qid.path, rootIno);
  t.is(by.get('..')!.qid.path, rootIno, "the share root's parent is not revealed");
  t.is(by.get('f')!.qid.path, BigInt(statSync(join(h.share, 'f')).ino));
  t.is(by.get('l')!.qid.type, P.P9_QTSYMLINK);
  t.is(by.get('l')!.type, 10);
  t.is(h.errno(() => h.readdir(h.walkTo('f'), 0n, 100)), EBADF, 'not opened');
  const fo = h.walkTo('f');
  h.lopen(fo, P.P9_DOTL_RDONLY);
  t.is(h.errno(() => h.readdir(fo, 0n, 100)), ENOTDIR);
  t.is(h.errno(() => h.readdir(d, 0n, 10)), EINVAL, 'count too small for one entry');
}));

// ---- names ----

test('Tsymlink + Treadlink; the target is stored verbatim', withHarness({}, (h, t: T) => {
  t.is(h.symlink(ROOT_FID, 'l', '../../whatever/it/is').type, P.P9_QTSYMLINK);
  t.is(readlinkSync(join(h.share, 'l')), '../../whatever/it/is');
  t.is(h.readlink(h.walkTo('l')), '../../whatever/it/is');
  t.is(h.errno(() => h.readlink(ROOT_FID)), EINVAL);
  t.is(h.errno(() => h.symlink(ROOT_FID, 'l', 'x')), EEXIST);
  t.is(h.errno(() => h.symlink(ROOT_FID, 'e', '')), EINVAL, 'empty target');
}));

test('Tlink creates a hard link; Trenameat and Trename move entries', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'data');
  mkdirSync(join(h.share, 'd'));
  const f = h.walkTo('f');
  const d = h.walkTo('d');
  h.link(d, f, 'hard');
  t.is(statSync(join(h.share, 'f')).nlink, 2);
  t.is(statSync(join(h.share, 'd/hard')).ino, statSync(join(h.share, 'f')).ino);
  t.is(h.errno(() => h.link(ROOT_FID, d, 'dirlink')), 1, 'EPERM for directories');
  h.renameat(ROOT_FID, 'f', d, 'moved');
  t.false(existsSync(join(h.share, 'f')));
  t.is(readFileSync(join(h.share, 'd/moved'), 'utf8'), 'data');
  // The fid follows its file: Trename (fid-based) uses where the file is now.
  h.rename(f, ROOT_FID, 'back');
  t.is(readFileSync(join(h.share, 'back'), 'utf8'), 'data');
  t.false(existsSync(join(h.share, 'd/moved')));
  // Trename of a directory fid, then walk ".." from a child of it.
  const sub = h.walkTo('d');
  h.rename(sub, ROOT_FID, 'd2');
  t.true(existsSync(join(h.share, 'd2/hard')));
  t.is(h.errno(() => h.renameat(ROOT_FID, 'missing', ROOT_FID, 'x')), ENOENT);
}));

test('Tremove removes the file and clunks the fid, even when the remove fails', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  mkdirSync(join(h.share, 'd'));
  writeFileSync(join(h.share, 'd/x'), '');
  const f = h.walkTo('f');
  h.remove(f);
  t.false(existsSync(join(h.share, 'f')));
  t.is(h.errno(() => h.clunk(f)), EBADF);
  const d = h.walkTo('d');
  t.is(h.errno(() => h.remove(d)), ENOTEMPTY);
  t.is(h.errno(() => h.clunk(d)), EBADF, 'clunked anyway');
  t.is(h.fs.fdsInUse, 0);
}));

test('Tmknod makes FIFOs and sockets, refuses devices', withHarness({}, (h, t: T) => {
  t.is(h.mknod(ROOT_FID, 'fifo', 0o10640).type, P.P9_QTFILE);
  t.true(lstatSync(join(h.share, 'fifo')).isFIFO());
  t.is(lstatSync(join(h.share, 'fifo')).mode & 0o7777, 0o640);
  h.mknod(ROOT_FID, 'sock', 0o140755);
  t.true(lstatSync(join(h.share, 'sock')).isSocket());
  t.is(h.errno(() => h.mknod(ROOT_FID, 'null', 0o20666, 1, 3)), 1, 'EPERM: character device');
  t.is(h.errno(() => h.mknod(ROOT_FID, 'sda', 0o60666, 8, 0)), 1, 'EPERM: block device');
  t.false(existsSync(join(h.share, 'null')));
  t.is(h.errno(() => h.mknod(ROOT_FID, 'odd', 0o170666)), EINVAL);
  // Opening a FIFO never happens on the host (it could block the I/O thread).
  t.is(h.errno(() => h.lopen(h.walkTo('fifo'), P.P9_DOTL_RDONLY)), 6, 'ENXIO');
}));

// ---- attributes ----

test('Tgetattr reports the host stat', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'x'.repeat(5000));
  utimesSync(join(h.share, 'f'), 1_000_000, 2_000_000);
  const a = h.getattr(h.walkTo('f'));
  const st = statSync(join(h.share, 'f'), { bigint: true });
  t.is(a.valid & P.P9_GETATTR_BASIC, P.P9_GETATTR_BASIC);
  t.is(a.qid.type, P.P9_QTFILE);
  t.is(a.qid.version, 0);
  t.is(a.qid.path, st.ino);
  t.is(a.mode, Number(st.mode));
  t.is(a.size, 5000n);
  t.is(a.nlink, st.nlink);
  t.is(a.uid, Number(st.uid));
  t.is(a.blocks, st.blocks);
  t.is(a.atime.sec, 1_000_000n);
  t.is(a.mtime.sec, 2_000_000n);
  t.is(a.ctime.sec, st.ctimeMs / 1000n);
  const root = h.getattr(ROOT_FID);
  t.is(root.qid.type, P.P9_QTDIR);
  t.is(root.mode & 0o170000, 0o040000);
}));

test('Tsetattr: chmod, chown, truncate (path fid and open fid), utimes (set and now)', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'x'.repeat(100));
  const f = h.walkTo('f');
  h.setattr(f, { valid: P.P9_ATTR_MODE, mode: 0o100600 });
  t.is(statSync(join(h.share, 'f')).mode & 0o7777, 0o600);
  h.setattr(f, { valid: P.P9_ATTR_UID | P.P9_ATTR_GID, uid: 555, gid: 666 });
  t.is(statSync(join(h.share, 'f')).uid, 555);
  t.is(statSync(join(h.share, 'f')).gid, 666);
  h.setattr(f, { valid: P.P9_ATTR_SIZE, size: 10n });
  t.is(statSync(join(h.share, 'f')).size, 10);
  const o = h.walkTo('f');
  h.lopen(o, P.P9_DOTL_RDWR);
  h.setattr(o, { valid: P.P9_ATTR_SIZE, size: 3n });
  t.is(statSync(join(h.share, 'f')).size, 3);
  h.setattr(f, { valid: P.P9_ATTR_ATIME | P.P9_ATTR_ATIME_SET | P.P9_ATTR_MTIME | P.P9_ATTR_MTIME_SET, atime: [1234n, 5n], mtime: [5678n, 999_999_999n] });
  const st = statSync(join(h.share, 'f'), { bigint: true });
  t.is(st.atimeNs, 1234n * 1_000_000_000n + 5n);
  t.is(st.mtimeNs, 5678n * 1_000_000_000n + 999_999_999n);
  h.setattr(f, { valid: P.P9_ATTR_MTIME });
  t.true(Math.abs(statSync(join(h.share, 'f')).mtimeMs - Date.now()) < 10_000, 'MTIME without MTIME_SET means now');
  h.setattr(f, { valid: P.P9_ATTR_CTIME });
  t.is(h.errno(() => h.setattr(f, { valid: P.P9_ATTR_MTIME | P.P9_ATTR_MTIME_SET, mtime: [1n, 1_000_000_000n] })), EINVAL, 'nsec out of range');
  t.is(h.errno(() => h.setattr(f, { valid: P.P9_ATTR_SIZE, size: 1n << 63n })), EINVAL);
  t.is(h.errno(() => h.setattr(ROOT_FID, { valid: P.P9_ATTR_SIZE, size: 0n })), EISDIR);
}));

test('Tsetattr strips set-user-ID and set-group-ID from files (set-group-ID stays on directories)', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  mkdirSync(join(h.share, 'd'));
  h.setattr(h.walkTo('f'), { valid: P.P9_ATTR_MODE, mode: 0o6755 });
  t.is(statSync(join(h.share, 'f')).mode & 0o7777, 0o755);
  h.setattr(h.walkTo('d'), { valid: P.P9_ATTR_MODE, mode: 0o7775 });
  t.is(statSync(join(h.share, 'd')).mode & 0o7777, 0o3775);
  const f = h.walkTo();
  h.lcreate(f, 'suid', P.P9_DOTL_WRONLY, 0o4755);
  t.is(statSync(join(h.share, 'suid')).mode & 0o7777, 0o755);
}));

test('Tstatfs reports the host filesystem', withHarness({}, (h, t: T) => {
  const s = h.statfs(ROOT_FID);
  t.true(s.bsize > 0);
  t.true(s.blocks > 0n);
  t.is(s.namelen, 255);
}));

test('Tfsync on open files and directories; EBADF when not open', withHarness({}, (h, t: T) => {
  const f = h.walkTo();
  h.lcreate(f, 'f', P.P9_DOTL_WRONLY, 0o644);
  h.write(f, 0, bytes('durable'));
  h.fsync(f, 0);
  h.fsync(f, 1);
  const d = h.walkTo();
  h.lopen(d, P.P9_DOTL_RDONLY);
  h.fsync(d);
  t.is(h.errno(() => h.fsync(h.walkTo('f'))), EBADF);
  t.pass();
}));

// ---- locks ----

test('Tlock / Tgetlock: open-file-description locks between fids; BLOCKED, never a wait', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'x'.repeat(100));
  const a = h.walkTo('f');
  const b = h.walkTo('f');
  h.lopen(a, P.P9_DOTL_RDWR);
  h.lopen(b, P.P9_DOTL_RDWR);
  t.is(h.lock(a, P.P9_LOCK_TYPE_WRLCK, 0n, 10n), P.P9_LOCK_SUCCESS);
  t.is(h.lock(b, P.P9_LOCK_TYPE_WRLCK, 5n, 10n, P.P9_LOCK_FLAGS_BLOCK), P.P9_LOCK_BLOCKED);
  t.is(h.lock(b, P.P9_LOCK_TYPE_WRLCK, 10n, 10n), P.P9_LOCK_SUCCESS, 'disjoint range');
  const g = h.getlock(b, P.P9_LOCK_TYPE_WRLCK, 0n, 0n);
  t.is(g.type, P.P9_LOCK_TYPE_WRLCK);
  t.is(g.start, 0n);
  t.is(g.length, 10n);
  t.is(g.clientId, 'guest');
  const free = h.getlock(a, P.P9_LOCK_TYPE_RDLCK, 0n, 5n);
  t.deepEqual(free, { type: P.P9_LOCK_TYPE_UNLCK, start: 0n, length: 5n, procId: 42, clientId: 'guest' }, 'own locks do not conflict');
  t.is(h.lock(a, P.P9_LOCK_TYPE_UNLCK, 0n, 0n), P.P9_LOCK_SUCCESS);
  t.is(h.lock(b, P.P9_LOCK_TYPE_WRLCK, 0n, 10n), P.P9_LOCK_SUCCESS);
  h.clunk(b); // closing releases b's locks
  t.is(h.lock(a, P.P9_LOCK_TYPE_WRLCK, 0n, 0n), P.P9_LOCK_SUCCESS);
  t.is(h.errno(() => h.lock(a, 7, 0n, 0n)), EINVAL);
  t.is(h.errno(() => h.lock(a, P.P9_LOCK_TYPE_RDLCK, 1n << 63n, 1n)), EINVAL);
  t.is(h.errno(() => h.lock(h.walkTo('f'), P.P9_LOCK_TYPE_RDLCK, 0n, 1n)), EBADF, 'unopened fid');
}));

// ---- xattrs ----

test('xattrs: set, get, list, replace, remove through the fid state machine', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  const f = h.walkTo('f');
  h.setxattr(f, 'user.color', bytes('blue'));
  t.is(text(h.getxattr(f, 'user.color')), 'blue');
  t.true(text(h.getxattr(f, '')).split('\0').includes('user.color'));
  t.is(h.errno(() => h.setxattr(f, 'user.color', bytes('red'), P.P9_XATTR_CREATE)), EEXIST);
  h.setxattr(f, 'user.color', bytes('red'), P.P9_XATTR_REPLACE);
  t.is(text(h.getxattr(f, 'user.color')), 'red');
  h.setxattr(f, 'user.empty', new Uint8Array(0));
  t.is(h.getxattr(f, 'user.empty').length, 0);
  // Linux's removexattr: Txattrcreate of size 0 with XATTR_REPLACE.
  h.setxattr(f, 'user.color', new Uint8Array(0), P.P9_XATTR_REPLACE);
  t.is(h.errno(() => h.getxattr(f, 'user.color')), ENODATA);
  // Directories too.
  h.setxattr(ROOT_FID, 'user.on-dir', bytes('1'));
  t.is(text(h.getxattr(ROOT_FID, 'user.on-dir')), '1');
  // A value in several writes (ext4 keeps values within one block, so not the full 64 KiB).
  const big = pattern(3000);
  const g = h.fid();
  h.walk(f, g, []);
  h.xattrcreate(g, 'user.big', big.length);
  h.write(g, 0, big.subarray(0, 1000));
  h.write(g, 1000, big.subarray(1000));
  h.clunk(g);
  t.deepEqual(h.getxattr(f, 'user.big'), big);
  t.is(h.errno(() => h.xattrcreate(h.walkTo('f'), 'user.x', 65537)), 7, 'E2BIG');
}));

test('xattrs: an incomplete value fails at clunk; writes past the size fail; reads past the end are empty', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  const f = h.walkTo('f');
  const g = h.walkTo('f');
  h.xattrcreate(g, 'user.partial', 10);
  h.write(g, 0, bytes('12345'));
  t.is(h.errno(() => h.write(g, 8, bytes('123'))), 28, 'ENOSPC past the declared size');
  t.is(h.errno(() => h.clunk(g)), EINVAL);
  t.is(h.errno(() => h.clunk(g)), EBADF, 'the fid is gone');
  t.is(h.errno(() => h.getxattr(f, 'user.partial')), ENODATA);
  h.setxattr(f, 'user.v', bytes('value'));
  const r = h.fid();
  t.is(h.xattrwalk(f, r, 'user.v'), 5n);
  t.is(text(h.read(r, 2, 100)), 'lue');
  t.is(h.read(r, 100, 100).length, 0);
  t.is(h.errno(() => h.walk(r, h.fid(), [])), EINVAL, 'an xattr fid cannot be walked');
  h.clunk(r);
}));

test('xattrs: overlapping writes do not count twice; a hole is refused; nothing is set (issue 19)', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  const f = h.walkTo('f');
  // Two 10-byte writes at offset 0 cover 10 of 20 bytes: the clunk must fail, not set 10 bytes and 10 zeros.
  const g = h.walkTo('f');
  h.xattrcreate(g, 'user.hole', 20);
  h.write(g, 0, bytes('0123456789'));
  h.write(g, 0, bytes('abcdefghij'));
  t.is(h.errno(() => h.clunk(g)), EINVAL);
  t.is(h.errno(() => h.getxattr(f, 'user.hole')), ENODATA, 'nothing was set');
  // A write past the covered prefix would leave a hole: refused at once.
  const k = h.walkTo('f');
  h.xattrcreate(k, 'user.gap', 20);
  h.write(k, 0, bytes('0123456789'));
  t.is(h.errno(() => h.write(k, 15, bytes('12345'))), EINVAL);
  t.is(h.errno(() => h.clunk(k)), EINVAL);
  // Overlap that ends up covering everything is fine: the last write wins.
  const m = h.walkTo('f');
  h.xattrcreate(m, 'user.overlap', 6);
  h.write(m, 0, bytes('aaaa'));
  h.write(m, 2, bytes('bbbb'));
  h.clunk(m);
  t.is(text(h.getxattr(f, 'user.overlap')), 'aabbbb');
}));

// ---- fid table ----

test('the fid table is bounded: EMFILE past the limit', withHarness({ maxFids: 10 }, (h, t: T) => {
  for (let i = 0; i < 9; i++) h.walkTo();
  t.is(h.errno(() => h.walkTo()), 24);
  t.is(h.server.fids.size, 10);
}));

test('the backend fd budget is enforced: EMFILE', withHarness({ maxFds: 8 }, (h, t: T) => {
  for (let i = 0; i < 20; i++) writeFileSync(join(h.share, `f${i}`), '');
  let opened = 0;
  let errno = 0;
  for (let i = 0; i < 20 && errno === 0; i++) {
    try {
      const f = h.walkTo(`f${i}`);
      h.lopen(f, P.P9_DOTL_RDONLY);
      opened++;
    } catch (e) {
      errno = (e as { errno: number }).errno;
    }
  }
  t.is(errno, 24);
  t.true(h.fs.fdsInUse <= 8);
  t.true(opened >= 3);
}));

test('device reset clunks every fid and closes every host fd', (t) => {
  const h = new P9Harness();
  try {
    writeFileSync(join(h.share, 'f'), '');
    const f = h.walkTo('f');
    h.lopen(f, P.P9_DOTL_RDONLY);
    t.true(h.fs.fdsInUse >= 2);
    h.device.reset();
    t.is(h.fs.fdsInUse, 0);
    t.is(h.server.fids.size, 0);
    t.is(h.server.msize, 0);
  } finally {
    h.close();
  }
});

// ---- read-only shares ----

test('a read-only share serves reads and refuses every mutation with EROFS, touching nothing', withHarness({ readOnly: true }, (h, t: T) => {
  const before = JSON.stringify(snapshot(h.share));
  const f = h.walkTo('file');
  h.lopen(f, P.P9_DOTL_RDONLY);
  t.is(text(h.read(f, 0, 100)), 'ro contents');
  t.deepEqual(h.listdir(ROOT_FID), ['.', '..', 'dir', 'file', 'link']);
  t.is(text(h.getxattr(h.walkTo('file'), 'user.tag')), 'v');
  const ro: [string, () => unknown][] = [
    ['lopen write', () => h.lopen(h.walkTo('file'), P.P9_DOTL_WRONLY)],
    ['lopen rdwr', () => h.lopen(h.walkTo('file'), P.P9_DOTL_RDWR)],
    ['lopen trunc', () => h.lopen(h.walkTo('file'), P.P9_DOTL_RDONLY | P.P9_DOTL_TRUNC)],
    ['lcreate', () => h.lcreate(h.walkTo(), 'new', P.P9_DOTL_WRONLY, 0o644)],
    ['lcreate existing', () => h.lcreate(h.walkTo(), 'file', P.P9_DOTL_RDONLY, 0o644)],
    ['mkdir', () => h.mkdir(ROOT_FID, 'nd')],
    ['symlink', () => h.symlink(ROOT_FID, 'ns', 'x')],
    ['mknod', () => h.mknod(ROOT_FID, 'nf', 0o10644)],
    ['link', () => h.link(ROOT_FID, h.walkTo('file'), 'hl')],
    ['rename', () => h.rename(h.walkTo('file'), ROOT_FID, 'renamed')],
    ['renameat', () => h.renameat(ROOT_FID, 'file', ROOT_FID, 'renamed')],
    ['unlinkat', () => h.unlinkat(ROOT_FID, 'file')],
    ['rmdir', () => h.unlinkat(ROOT_FID, 'dir', P.P9_DOTL_AT_REMOVEDIR)],
    ['remove', () => h.remove(h.walkTo('file'))],
    ['setattr mode', () => h.setattr(h.walkTo('file'), { valid: P.P9_ATTR_MODE, mode: 0o777 })],
    ['setattr size', () => h.setattr(h.walkTo('file'), { valid: P.P9_ATTR_SIZE, size: 0n })],
    ['setattr times', () => h.setattr(h.walkTo('file'), { valid: P.P9_ATTR_MTIME })],
    ['setattr owner', () => h.setattr(h.walkTo('file'), { valid: P.P9_ATTR_UID, uid: 5 })],
    ['xattrcreate', () => h.xattrcreate(h.walkTo('file'), 'user.x', 1)],
    ['write', () => h.write(f, 0, bytes('x'))],
  ];
  for (const [what, fn] of ro) {
    const e = h.errno(fn);
    t.true(e === EROFS || (what === 'write' && e === EBADF), `${what}: errno ${e}`);
  }
  t.is(JSON.stringify(snapshot(h.share)), before, 'nothing changed on the host');
}, (share) => {
  writeFileSync(join(share, 'file'), 'ro contents');
  mkdirSync(join(share, 'dir'));
  symlinkSync('file', join(share, 'link'));
  hostSetxattr(join(share, 'file'), 'user.tag', 'v');
}));
