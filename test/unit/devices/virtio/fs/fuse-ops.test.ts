/** FUSE round trips over a real temp share: every op the server implements, lookup counts, stale ids, read-only shares. */
import test from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as C from '../../../../../devices/virtio/constants.js';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { VirtioFsDevice } from '../../../../../devices/virtio/fs/device.js';
import { openFsShareBackend } from '../../../../../devices/virtio/fs/index.js';
import { bytes, cstr, text, W, withHarness, FuseHarness } from './fuse-harness.js';

test('info: device 26, tag[36] + num_request_queues, a hiprio queue of 128 and a request queue of 1024', (t) => {
  const info = VirtioFsDevice.info({ tag: 'myfs' });
  t.is(info.deviceType, 26);
  // 1024: Linux caps a request at (queue size - 4) pages, and a 1 MiB request (MAX_PAGES) needs 260 descriptors.
  t.deepEqual(info.queueMaxSizes, [128, 1024]);
  t.is(info.config.length, 40);
  t.is(text(info.config.subarray(0, 4)), 'myfs');
  t.true(info.config.subarray(4, 36).every((b) => b === 0));
  t.is(new DataView(info.config.buffer).getUint32(36, true), 1);
  t.is(info.features, C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC));
  t.throws(() => VirtioFsDevice.info({ tag: 'x'.repeat(37) }), { instanceOf: RangeError });
  t.throws(() => VirtioFsDevice.info({ tag: 'a b' }), { instanceOf: RangeError });
  t.notThrows(() => VirtioFsDevice.info({ tag: 'x'.repeat(36) }));
});

test('openFsShareBackend validates and opens', (t) => {
  const h = new FuseHarness();
  try {
    const b = openFsShareBackend({ tag: 'ok', path: h.share, protocol: 'virtiofs' }, 'shares[0]');
    t.is(b.params.tag, 'ok');
    t.false(b.params.readOnly);
    b.close();
    t.throws(() => openFsShareBackend({ tag: 'ok', path: h.share, protocol: '9p' }, 'shares[0]'), { message: /protocol/ });
    t.throws(() => openFsShareBackend({ tag: '', path: h.share, protocol: 'virtiofs' }, 'shares[0]'), { message: /tag/ });
    t.throws(() => openFsShareBackend({ tag: 'x', path: join(h.share, 'nope'), protocol: 'virtiofs' }, 'shares[0]'));
    const never = openFsShareBackend({ tag: 'ok', path: h.share, protocol: 'virtiofs', cache: 'never' }, 'shares[0]');
    t.true(never.params.directIo);
    never.close();
    t.throws(() => openFsShareBackend({ tag: 'ok', path: h.share, protocol: 'virtiofs', cache: 'always' as 'never' }, 'shares[2]'), { message: /shares\[2\]\.cache/ });
  } finally {
    h.close();
  }
});

test('INIT negotiates 7.31, max_write, max_pages, supported flags only', withHarness({ raw: true }, (h, t) => {
  t.is(h.errno(() => h.lookup(1, 'x')), F.EIO);
  const r = h.init(38, 0xffffffff);
  t.is(r.major, 7);
  t.is(r.minor, 31);
  t.is(r.maxWrite, F.MAX_WRITE);
  t.is(r.maxPages, F.MAX_PAGES);
  t.is(r.flags & ~F.SUPPORTED_INIT_FLAGS, 0);
  t.truthy(r.flags & F.FUSE_DO_READDIRPLUS);
  t.is(r.flags & (1 << 7), 0); // no SPLICE
  t.is(h.init(29, F.FUSE_ASYNC_READ).minor, 29);
}));

test("cache 'auto' (the default): OPEN and CREATE answer open_flags 0", withHarness({}, (h, t) => {
  const { entry, openFlags } = h.create(1, 'f');
  t.is(openFlags, 0);
  t.is(h.openOut(entry.nodeid, F.O_RDWR).openFlags, 0);
}));

test("cache 'never': OPEN and CREATE of files answer FOPEN_DIRECT_IO, OPENDIR does not; reads and writes work", withHarness({ directIo: true }, (h, t) => {
  const { entry, fh, openFlags } = h.create(1, 'f');
  t.is(openFlags, F.FOPEN_DIRECT_IO);
  const data = new Uint8Array(F.MAX_WRITE).map((_, i) => (i * 13) & 0xff);
  t.is(h.write(fh, 0, data), data.length, 'a whole max_write request');
  const o = h.openOut(entry.nodeid, 0);
  t.is(o.openFlags, F.FOPEN_DIRECT_IO);
  t.deepEqual(h.read(o.fh, 0, F.MAX_WRITE), data);
  t.is(h.openOut(1, 0, true).openFlags, 0, 'directories keep their cache');
}));

test('create / write / read / getattr round trip, zero-copy across split segments', withHarness({}, (h, t) => {
  const { entry, fh } = h.create(1, 'f.txt');
  t.true(entry.nodeid > 1n);
  t.is(entry.attr.mode & 0o777, 0o644);
  const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
  t.is(h.write(fh, 0, data), data.length);
  t.deepEqual(new Uint8Array(readFileSync(join(h.share, 'f.txt'))), data);
  const back = h.read(fh, 0, 400_000, [100, 5000, 70000]);
  t.deepEqual(back, data);
  t.deepEqual(h.read(fh, 299_990, 100), data.subarray(299_990));
  t.is(h.read(fh, 1_000_000, 100).length, 0);
  t.is(h.getattr(entry.nodeid).size, BigInt(data.length));
  h.release(fh);
  t.is(h.errno(() => h.read(fh, 0, 10)), F.EBADF);
  t.is(h.server.handleCount, 0);
}));

test('lookup / readdir / readdirplus of 300 entries', withHarness({}, (h, t) => {
  for (let i = 0; i < 300; i++) h.create(1, `n${i}`);
  h.mkdir(1, 'sub');
  const names = h.readdir(1).map((e) => e.name).sort();
  t.is(names.length, 303);
  t.true(names.includes('.') && names.includes('..') && names.includes('sub'));
  const plus = h.readdir(1, true, 2048);
  t.is(plus.length, 303);
  const sub = plus.find((e) => e.name === 'sub')!;
  t.true(sub.entry!.nodeid > 1n);
  t.is(sub.entry!.attr.mode & 0o170000, 0o040000);
  t.is(plus.find((e) => e.name === '.')!.entry!.nodeid, 0n);
  t.is(h.lookup(1, 'sub').nodeid, sub.entry!.nodeid);
  t.is(h.errno(() => h.lookup(1, 'missing')), F.ENOENT);
}));

test('FORGET / BATCH_FORGET count lookups and free inodes; stale nodeids get ESTALE', withHarness({}, (h, t) => {
  writeFileSync(join(h.share, 'a'), 'a');
  const base = h.server.inodeCount;
  const e = h.lookup(1, 'a');
  h.lookup(1, 'a');
  h.lookup(1, 'a');
  t.is(h.server.lookupCount(e.nodeid), 3n);
  h.forget(e.nodeid, 2n);
  t.is(h.server.lookupCount(e.nodeid), 1n);
  t.is(h.getattr(e.nodeid).size, 1n);
  h.batchForget([[e.nodeid, 1n], [999n, 5n], [1n, 100n]]);
  t.is(h.server.lookupCount(e.nodeid), undefined);
  t.is(h.server.inodeCount, base);
  t.is(h.errno(() => h.getattr(e.nodeid)), F.ESTALE);
  t.is(h.getattr(1).mode & 0o170000, 0o040000); // root survives a forget
  const e2 = h.lookup(1, 'a');
  t.not(e2.nodeid, e.nodeid); // nodeids are never reused
}));

test('mkdir / rmdir / unlink / rename / rename2 / link / symlink / readlink', withHarness({}, (h, t) => {
  const d = h.mkdir(1, 'd', 0o750);
  t.is(statSync(join(h.share, 'd')).mode & 0o777, 0o750 & ~0o022);
  const { entry } = h.create(d.nodeid, 'x');
  h.rename(d.nodeid, 'x', 1, 'y');
  t.true(existsSync(join(h.share, 'y')));
  writeFileSync(join(h.share, 'z'), 'z');
  t.is(h.errno(() => h.rename(1, 'y', 1, 'z', 1 /* NOREPLACE */)), F.EEXIST);
  h.rename(1, 'y', 1, 'z', 2 /* EXCHANGE */);
  t.is(readFileSync(join(h.share, 'y'), 'utf8'), 'z');
  const l = h.link(entry.nodeid, 1, 'hard');
  t.is(l.nodeid, entry.nodeid);
  t.is(l.attr.nlink, 2);
  const s = h.symlink(1, 'sl', 'some/target');
  t.is(readlinkSync(join(h.share, 'sl')), 'some/target');
  t.is(h.readlink(s.nodeid), 'some/target');
  h.unlink(1, 'hard');
  h.unlink(1, 'sl');
  t.false(existsSync(join(h.share, 'sl')));
  t.is(h.errno(() => h.rmdir(1, 'z')), F.ENOTDIR);
  h.rmdir(1, 'd');
  t.false(existsSync(join(h.share, 'd')));
}));

test('setattr: truncate, chmod, utimes; statfs; access', withHarness({}, (h, t) => {
  writeFileSync(join(h.share, 'f'), 'hello world');
  const e = h.lookup(1, 'f');
  t.is(h.setattr(e.nodeid, { valid: F.FATTR_SIZE, size: 5n }).size, 5n);
  t.is(readFileSync(join(h.share, 'f'), 'utf8'), 'hello');
  t.is(h.setattr(e.nodeid, { valid: F.FATTR_MODE, mode: 0o4751 }).mode & 0o7777, 0o751); // setuid dropped
  const a = h.setattr(e.nodeid, { valid: F.FATTR_ATIME | F.FATTR_MTIME, atime: 1000n, mtime: 2000n, mtimensec: 5 });
  t.is(a.mtime, 2000n);
  t.is(a.mtimensec, 5);
  t.is(Math.floor(lstatSync(join(h.share, 'f')).mtimeMs), 2000000);
  const fh = h.open(e.nodeid, F.O_RDWR);
  t.is(h.setattr(e.nodeid, { valid: F.FATTR_SIZE | F.FATTR_FH, size: 2n, fh }).size, 2n);
  h.release(fh);
  const s = h.statfs();
  t.true(s.blocks > 0n && s.bsize > 0 && s.namelen >= 255);
  h.call(F.FUSE_ACCESS, e.nodeid, new W().u32(4).u32(0).bytes());
}));

test('xattr set / get / size / list / remove', withHarness({}, (h, t) => {
  writeFileSync(join(h.share, 'f'), '');
  const e = h.lookup(1, 'f');
  try {
    h.setxattr(e.nodeid, 'user.k', bytes('value!'));
  } catch (err) {
    t.pass(`xattrs unsupported here: ${(err as Error).message}`);
    return;
  }
  t.is(h.getxattr(e.nodeid, 'user.k', 0), 6);
  t.is(text(h.getxattr(e.nodeid, 'user.k') as Uint8Array), 'value!');
  t.is(h.errno(() => h.getxattr(e.nodeid, 'user.k', 2)), F.ERANGE);
  t.true(text(h.listxattr(e.nodeid)).includes('user.k\0'));
  t.is(h.errno(() => h.setxattr(e.nodeid, 'trusted.x', bytes('v'))), F.EPERM);
  h.removexattr(e.nodeid, 'user.k');
  t.is(h.errno(() => h.getxattr(e.nodeid, 'user.k')), 61 /* ENODATA */);
}));

test('fsync, flush, fallocate, lseek, mknod fifo, DESTROY, unknown opcode ENOSYS', withHarness({}, (h, t) => {
  const { entry, fh } = h.create(1, 'f');
  h.write(fh, 0, bytes('abc'));
  h.call(F.FUSE_FSYNC, entry.nodeid, new W().u64(fh).u32(1).u32(0).bytes());
  h.call(F.FUSE_FLUSH, entry.nodeid, new W().u64(fh).u32(0).u32(0).u64(0).bytes());
  h.call(F.FUSE_FALLOCATE, entry.nodeid, new W().u64(fh).u64(0).u64(8192).u32(0).u32(0).bytes());
  t.is(statSync(join(h.share, 'f')).size, 8192);
  t.is(h.call(F.FUSE_LSEEK, entry.nodeid, new W().u64(fh).u64(0).u32(2 /* SEEK_END */).u32(0).bytes()).u64(), 8192n);
  const fifo = h.call(F.FUSE_MKNOD, 1, new W().u32(0o010644).u32(0).u32(0).u32(0).str('p').bytes());
  t.true(fifo.u64() > 1n);
  t.true(lstatSync(join(h.share, 'p')).isFIFO());
  t.is(h.errno(() => h.call(F.FUSE_MKNOD, 1, new W().u32(0o020644).u32(0x0101).u32(0).u32(0).str('dev').bytes())), F.EPERM);
  t.is(h.errno(() => h.call(9999, 1)), F.ENOSYS);
  t.is(h.errno(() => h.call(31 /* GETLK */, 1, new Uint8Array(64))), F.ENOSYS);
  h.call(F.FUSE_DESTROY, 0);
  t.is(h.server.handleCount, 0);
  t.is(h.server.inodeCount, 1);
}));

test('read-only share refuses every mutation with EROFS and allows reads', withHarness({ readOnly: true }, (h, t) => {
  const e = h.lookup(1, 'f');
  const fh = h.open(e.nodeid, 0);
  t.is(text(h.read(fh, 0, 100)), 'ro data');
  t.is(h.errno(() => h.open(e.nodeid, F.O_RDWR)), F.EROFS);
  t.is(h.errno(() => h.open(e.nodeid, F.O_TRUNC)), F.EROFS);
  t.is(h.errno(() => h.create(1, 'new')), F.EROFS);
  t.is(h.errno(() => h.mkdir(1, 'd')), F.EROFS);
  t.is(h.errno(() => h.unlink(1, 'f')), F.EROFS);
  t.is(h.errno(() => h.rename(1, 'f', 1, 'g')), F.EROFS);
  t.is(h.errno(() => h.symlink(1, 's', 'f')), F.EROFS);
  t.is(h.errno(() => h.link(e.nodeid, 1, 'l')), F.EROFS);
  t.is(h.errno(() => h.setattr(e.nodeid, { valid: F.FATTR_SIZE, size: 0n })), F.EROFS);
  t.is(h.errno(() => h.setxattr(e.nodeid, 'user.a', bytes('v'))), F.EROFS);
  t.is(h.errno(() => h.write(fh, 0, bytes('x'))), F.EROFS);
  t.is(readFileSync(join(h.share, 'f'), 'utf8'), 'ro data');
  t.deepEqual(cstr('').length, 1);
}, (share) => writeFileSync(join(share, 'f'), 'ro data')));

test('file handle table is bounded', withHarness({ maxHandles: 4 }, (h, t) => {
  mkdirSync(join(h.share, 'd'));
  const e = h.lookup(1, 'd');
  for (let i = 0; i < 4; i++) h.open(e.nodeid, 0, true);
  t.is(h.errno(() => h.open(e.nodeid, 0, true)), F.EMFILE);
  t.is(h.errno(() => h.create(1, 'x')), F.EMFILE);
  t.false(existsSync(join(h.share, 'x')));
}));

test('activate without the request queue needs reset; reset() drops the session', withHarness({}, (h, t) => {
  const fds = { watch: () => {}, unwatch: () => {} };
  const ctx = { memory: h.memory, fds, features: 0n, queues: [null, null], signalUsed: () => {}, updateConfig: () => {}, needsReset: () => {} };
  const { fh } = h.create(1, 'f');
  t.is(h.server.handleCount, 1);
  h.device.reset();
  t.is(h.server.handleCount, 0);
  t.is(h.server.inodeCount, 1);
  t.throws(() => h.device.activate(ctx), { message: /request queue/ });
  t.truthy(fh);
}));

test('hiprio FORGET chains come back with length 0 and drop the lookup', withHarness({}, (h, t) => {
  writeFileSync(join(h.share, 'a'), 'a');
  const e = h.lookup(1, 'a');
  const r = h.request(F.FUSE_FORGET, e.nodeid, new W().u64(1).bytes(), 64, { queue: 0 });
  t.is(r.len, 0);
  t.is(h.server.lookupCount(e.nodeid), undefined);
}));

test('fd budget: READDIRPLUS stops pinning inodes at 3/4 of maxFds; LOOKUP past the budget is EMFILE, FORGET frees', withHarness({ maxFds: 64 }, (h, t) => {
  for (let i = 0; i < 100; i++) writeFileSync(join(h.share, `n${i}`), '');
  const plus = h.readdir(1, true, 65536).filter((e) => e.name.startsWith('n'));
  t.is(plus.length, 100);
  const pinned = plus.filter((e) => e.entry!.nodeid !== 0n);
  t.true(pinned.length > 0 && pinned.length <= 48, `${pinned.length} pinned`);
  const unpinned = plus.filter((e) => e.entry!.nodeid === 0n).map((e) => e.name);
  const got: bigint[] = [];
  let emfile = 0;
  for (const name of unpinned) {
    try {
      got.push(h.lookup(1, name).nodeid);
    } catch {
      emfile++;
    }
  }
  t.true(emfile > 0);
  t.is(h.errno(() => h.lookup(1, unpinned[unpinned.length - 1]!)), F.EMFILE);
  h.batchForget(got.map((id) => [id, 1n]));
  t.true(h.lookup(1, unpinned[unpinned.length - 1]!).nodeid > 0n);
}));
