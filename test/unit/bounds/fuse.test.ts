/**
 * docs/bounds.md, virtio-fs rows: a hostile guest LOOKUPs without ever
 * FORGETting, opens without releasing, and asks for listings larger than any
 * reply. Each test asserts the table (or reply) stayed within its bound and
 * the error the guest got.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as F from '../../../devices/virtio/fs/constants.js';
import { defaultFsMaxFds } from '../../../devices/virtio/fs/index.js';
import { FuseServer } from '../../../devices/virtio/fs/server.js';
import { MiB, W, withHarness } from '../devices/virtio/fs/fuse-harness.js';

type T = ExecutionContext;
const MAX_FDS = 32;

function files(n: number, name = (i: number) => `f${i}`) {
  return (share: string): void => {
    for (let i = 0; i < n; i++) writeFileSync(join(share, name(i)), 'x');
  };
}

test('FUSE inodes: every nodeid pins one share fd, so at most maxFds + 1 (root) nodeids; LOOKUP past the budget gets EMFILE, FORGET frees', withHarness({ maxFds: MAX_FDS }, (h, t: T) => {
  const got: bigint[] = [];
  let errno = 0;
  // The guest LOOKUPs every file and never FORGETs any.
  for (let i = 0; i < 3 * MAX_FDS && errno === 0; i++) {
    try {
      got.push(h.lookup(1, `f${i}`).nodeid);
    } catch {
      errno = h.errno(() => h.lookup(1, `f${i}`));
    }
  }
  t.is(errno, F.EMFILE);
  t.is(got.length, MAX_FDS);
  t.is(h.server.inodeCount, MAX_FDS + 1, 'the table is at its bound, not past it');
  t.is(h.fs.fdsInUse, MAX_FDS);
  // LOOKUPs of names already known take no new fd: they only count up the kernel's lookups.
  t.is(h.lookup(1, 'f0').nodeid, got[0]);
  t.is(h.server.inodeCount, MAX_FDS + 1);
  // FORGET gives the fd back; exactly one more name can be looked up.
  h.forget(got[0]!, 2n);
  t.is(h.server.inodeCount, MAX_FDS);
  h.lookup(1, `f${MAX_FDS + 1}`);
  t.is(h.errno(() => h.lookup(1, `f${MAX_FDS + 2}`)), F.EMFILE);
  // The default budget of a virtio-fs share: half the soft RLIMIT_NOFILE, 256..1048576.
  const def = defaultFsMaxFds();
  t.true(def >= 256 && def <= 1_048_576, `default ${def}`);
}, files(3 * MAX_FDS)));

test('FUSE handles: at most maxHandles (default MAX_HANDLES = 65536) and the share\'s fds; OPEN/OPENDIR/CREATE past it get EMFILE', withHarness({ maxHandles: 8 }, (h, t: T) => {
  const e = h.lookup(1, 'f0');
  const d = h.lookup(1, 'd');
  const fhs: bigint[] = [];
  for (let i = 0; i < 4; i++) fhs.push(h.open(e.nodeid));
  for (let i = 0; i < 4; i++) fhs.push(h.open(d.nodeid, 0, true));
  t.is(h.server.handleCount, 8);
  t.is(h.errno(() => h.open(e.nodeid)), F.EMFILE);
  t.is(h.errno(() => h.open(d.nodeid, 0, true)), F.EMFILE);
  t.is(h.errno(() => h.create(1, 'new')), F.EMFILE);
  t.is(h.server.handleCount, 8, 'the table is at its bound, not past it');
  t.is(h.fs.openFileCount, 8, 'no host file was left open by a refused OPEN');
  h.release(fhs.pop()!, true);
  h.open(e.nodeid);
  t.is(h.errno(() => h.open(e.nodeid)), F.EMFILE);
  t.is(F.MAX_HANDLES, 65536);
  t.is(new FuseServer(h.fs).maxHandles, F.MAX_HANDLES);
}, (share) => { writeFileSync(join(share, 'f0'), 'x'); mkdirSync(join(share, 'd')); }));

test('FUSE directory listings: no buffer per open directory; one READDIR reply is at most MAX_WRITE + 4 KiB (the server\'s one reply buffer), whatever size the guest asks', withHarness({}, (h, t: T) => {
  const d = h.lookup(1, 'big');
  const fh = h.open(d.nodeid, 0, true);
  const replyBuffer = h.server.reply.buf;
  // 5000 entries of 200-byte names: about 1.1 MiB of fuse_dirent, more than one reply can hold.
  const ask = 0xffff_ffff;
  const chain = 2 * MiB;
  let total = 0;
  let off = 0n;
  let pages = 0;
  for (;;) {
    const r = h.request(F.FUSE_READDIR, d.nodeid, new W().u64(fh).u64(off).u32(ask).u32(0).u64(0).u32(0).u32(0).bytes(), chain);
    t.is(r.error, 0);
    t.true(r.len <= F.MAX_WRITE + 4096, `a ${r.len}-byte reply`);
    if (r.payload.length === 0) break;
    pages++;
    // Walk the entries to the last one's offset.
    const dv = new DataView(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength);
    for (let at = 0; at < r.payload.length;) {
      off = dv.getBigUint64(at + 8, true);
      const namelen = dv.getUint32(at + 16, true);
      at += 24 + ((namelen + 7) & ~7);
      total++;
    }
  }
  t.is(total, 5002, 'every entry, . and .. included');
  t.true(pages >= 2, 'the listing did not fit one reply');
  t.is(h.server.reply.buf, replyBuffer, 'the reply buffer was reused, not grown');
  t.is(replyBuffer.length, F.MAX_WRITE + 4096);
  h.release(fh, true);
}, (share) => {
  mkdirSync(join(share, 'big'));
  for (let i = 0; i < 5000; i++) writeFileSync(join(share, 'big', `${String(i).padStart(5, '0')}${'n'.repeat(195)}`), '');
}));
