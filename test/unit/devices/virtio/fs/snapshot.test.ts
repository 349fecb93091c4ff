/**
 * virtio-fs snapshot hooks (fsKind.saveState / restoreState) without KVM: a
 * FUSE session is saved from one server, JSON round-tripped, and restored
 * into a fresh server over the same share (or a copy of it); nodeids and
 * handles continue, vanished files answer -ESTALE (FORGET and RELEASE still
 * work), and a hostile state file is refused naming the field.
 */
import test, { type ExecutionContext } from 'ava';
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { fsKind } from '../../../../../devices/virtio/fs/kind.js';
import type { FuseSavedState } from '../../../../../devices/virtio/fs/snapshot.js';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import { bytes, FuseHarness, text, W } from './fuse-harness.js';

type T = ExecutionContext;
const EBADF = 9;
const ESTALE = 116;
const O_RDWR = 2;
const NAMES = ['a.txt', 'dir', 'e1', 'e2', 'e3', 'e4', 'e5', 'gone.txt', 'kind-change'];

function tree(share: string): void {
  writeFileSync(join(share, 'a.txt'), 'hello world');
  writeFileSync(join(share, 'gone.txt'), 'soon gone');
  mkdirSync(join(share, 'dir'));
  writeFileSync(join(share, 'dir', 'b.txt'), 'bee');
  for (let i = 1; i <= 5; i++) writeFileSync(join(share, `e${i}`), `entry ${i}`);
  writeFileSync(join(share, 'kind-change'), 'a file for now');
}

function save(h: FuseHarness): FuseSavedState {
  return JSON.parse(JSON.stringify(fsKind.saveState!(h.device))) as FuseSavedState;
}

function restore(share: string, state: unknown): FuseHarness {
  const h = new FuseHarness({ raw: true, sharePath: share });
  try {
    fsKind.restoreState!(h.device, state, { active: true });
  } catch (e) {
    h.close();
    throw e;
  }
  return h;
}

function refused(t: T, share: string, state: unknown, opts: { maxFds?: number; maxHandles?: number } = {}): SnapshotStateError {
  const h = new FuseHarness({ raw: true, sharePath: share, ...opts });
  try {
    const e = t.throws(() => fsKind.restoreState!(h.device, state, { active: true }), { instanceOf: SnapshotStateError })!;
    t.false(h.server.initialized, 'no session after a refused restore');
    t.is(h.server.inodeCount, 1);
    t.is(h.server.handleCount, 0);
    t.is(h.fs.fdsInUse, 0, 'nothing half-built holds an fd');
    return e;
  } finally {
    h.close();
  }
}

/** One READDIR page of directory handle `fh` from `offset`: names and the last entry's offset. */
function readdirPage(h: FuseHarness, nodeid: bigint, fh: bigint, offset: bigint, size: number): { names: string[]; last: bigint } {
  const r = h.call(F.FUSE_READDIR, nodeid, new W().u64(fh).u64(offset).u32(size).u32(0).u64(0).u32(0).u32(0).bytes(), 16 + size);
  const names: string[] = [];
  let last = offset;
  while (r.remaining > 0) {
    r.u64();
    last = r.u64();
    const namelen = r.u32();
    r.u32();
    names.push(text(r.b.subarray(r.at, r.at + namelen)));
    r.skip((namelen + 7) & ~7);
  }
  return { names, last };
}

/** A session: a file open read-write and written through, a directory handle read part way, nodeids with lookup counts. */
function session(h: FuseHarness) {
  const a = h.lookup(1, 'a.txt').nodeid;
  const fh = h.open(a, O_RDWR);
  h.write(fh, 0, bytes('HELLO'));
  const dir = h.lookup(1, 'dir').nodeid;
  const b = h.lookup(dir, 'b.txt').nodeid;
  h.lookup(dir, 'b.txt');
  const gone = h.lookup(1, 'gone.txt').nodeid;
  const goneFh = h.open(gone, 0);
  const change = h.lookup(1, 'kind-change').nodeid;
  const rootFh = h.open(1, 0, true);
  const page = readdirPage(h, 1n, rootFh, 0n, 3 * 32);
  return { a, fh, dir, b, gone, goneFh, change, rootFh, page };
}

test('a restored session continues: nodeids, lookup counts, open handles, readdir offsets', (t) => {
  const h1 = new FuseHarness({}, tree);
  let h2: FuseHarness | null = null;
  try {
    const s = session(h1);
    const state = save(h1);
    t.true(state.initialized);
    t.is(state.inodes.length, h1.server.inodeCount - 1, 'every nodeid but the root');
    t.like(state.inodes.find((i) => i.nodeid === String(s.b)), { kind: 'file', path: 'dir/b.txt', nlookup: '2' });
    t.like(state.handles.find((x) => x.fh === String(s.fh)), { kind: 'file', path: 'a.txt', mode: { access: 'readwrite' } });
    t.like(state.handles.find((x) => x.fh === String(s.rootFh)), { kind: 'dir', path: '' });

    h2 = restore(h1.share, state);
    t.true(h2.server.initialized, 'no FUSE_INIT needed after the restore');
    t.is(text(h2.read(s.fh, 0, 64)), 'HELLO world');
    t.is(h2.write(s.fh, 11, bytes('!')), 1);
    t.is(readFileSync(join(h2.share, 'a.txt'), 'utf8'), 'HELLO world!');
    t.is(h2.getattr(s.b).size, 3n);
    t.is(h2.server.lookupCount(s.b), 2n);
    t.is(h2.lookup(s.dir, 'b.txt').nodeid, s.b, 'a new lookup of a restored inode gets its nodeid');
    t.is(h2.server.lookupCount(s.b), 3n);
    const fresh = h2.lookup(1, 'e1').nodeid;
    t.true(fresh >= BigInt(state.nextNodeid), 'new nodeids do not reuse saved ones');
    t.true(s.page.names.length > 0 && s.page.names.length < NAMES.length + 2, 'the first page was partial');
    const rest: string[] = [];
    for (let off = s.page.last; ;) {
      const p = readdirPage(h2, 1n, s.rootFh, off, 4096);
      if (p.names.length === 0) break;
      rest.push(...p.names);
      off = p.last;
    }
    t.deepEqual([...s.page.names, ...rest].filter((n) => n !== '.' && n !== '..').sort(), NAMES, 'readdir continues from the saved offset');
    const fh2 = h2.open(s.a, 0);
    t.true(fh2 >= BigInt(state.nextFh), 'new handles do not reuse saved ones');
    for (const fh of [s.fh, s.goneFh, fh2]) h2.release(fh);
    h2.release(s.rootFh, true);
    h2.batchForget([[s.a, 1n], [s.dir, 1n], [s.b, 3n], [s.gone, 1n], [s.change, 1n], [fresh, 1n]]);
    t.is(h2.server.inodeCount, 1);
    t.is(h2.fs.fdsInUse, 0, 'every restored reference is given back by RELEASE and FORGET');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a file deleted or replaced by another kind answers -ESTALE; FORGET and RELEASE still work', (t) => {
  const h1 = new FuseHarness({}, tree);
  let h2: FuseHarness | null = null;
  try {
    const s = session(h1);
    const state = save(h1);
    unlinkSync(join(h1.share, 'gone.txt'));
    unlinkSync(join(h1.share, 'kind-change'));
    mkdirSync(join(h1.share, 'kind-change'));
    h2 = restore(h1.share, state);
    t.deepEqual(h2.server.staleCount, { inodes: 2, handles: 1 });
    t.is(h2.errno(() => h2!.getattr(s.gone)), ESTALE);
    t.is(h2.errno(() => h2!.getattr(s.change)), ESTALE, 'a path that is now a directory');
    t.is(h2.errno(() => h2!.read(s.goneFh, 0, 16)), ESTALE, 'a handle whose file is gone');
    h2.release(s.goneFh);
    t.is(h2.errno(() => h2!.release(s.goneFh)), EBADF, 'released once');
    h2.forget(s.gone, 1n);
    h2.forget(s.change, 1n);
    t.deepEqual(h2.server.staleCount, { inodes: 0, handles: 0 });
    t.is(text(h2.read(s.fh, 0, 64)), 'HELLO world', 'the other handles are fine');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('restore over a copy of the tree serves the copy', (t) => {
  const h1 = new FuseHarness({}, tree);
  const copy = `${h1.dir}-copy`;
  let h2: FuseHarness | null = null;
  try {
    const s = session(h1);
    const state = save(h1);
    cpSync(h1.share, copy, { recursive: true });
    writeFileSync(join(copy, 'a.txt'), 'COPY! world');
    h2 = restore(copy, state);
    t.is(text(h2.read(s.fh, 0, 64)), 'COPY! world');
    h2.write(s.fh, 0, bytes('c'));
    t.is(readFileSync(join(copy, 'a.txt'), 'utf8'), 'cOPY! world');
    t.is(readFileSync(join(h1.share, 'a.txt'), 'utf8'), 'HELLO world', 'the original tree is untouched');
    t.is(h2.getattr(s.b).size, 3n);
  } finally {
    h2?.close();
    h1.close();
    rmSync(copy, { recursive: true, force: true });
  }
});

test('hostile states are refused naming the field', (t) => {
  const h = new FuseHarness({}, (share, outside) => {
    tree(share);
    symlinkSync(outside, join(share, 'esc'));
  });
  try {
    const base = { format: 1, initialized: true, nextNodeid: '100', nextFh: '100', inodes: [], handles: [] };
    const ino = (path: unknown, extra: object = {}) => ({ ...base, inodes: [{ nodeid: '2', nlookup: '1', kind: 'file', path, ...extra }] });
    const fh = (path: unknown, extra: object = {}) => ({ ...base, handles: [{ fh: '1', kind: 'file', path, mode: { access: 'read' }, ...extra }] });
    t.is(refused(t, h.share, ino('../outside/secret')).field, 'virtio-fs.inodes[0].path');
    t.is(refused(t, h.share, ino('/etc/passwd')).field, 'virtio-fs.inodes[0].path');
    t.is(refused(t, h.share, ino('dir/../..')).field, 'virtio-fs.inodes[0].path');
    t.is(refused(t, h.share, fh('../outside/secret')).field, 'virtio-fs.handles[0].path');
    t.is(refused(t, h.share, fh('/etc/passwd')).field, 'virtio-fs.handles[0].path');
    t.is(refused(t, h.share, fh('esc', { kind: 'symlink' })).field, 'virtio-fs.handles[0].kind');
    t.is(refused(t, h.share, fh('a.txt', { mode: { access: 'exec' } })).field, 'virtio-fs.handles[0].mode.access');
    t.is(refused(t, h.share, ino('a.txt', { nodeid: '1' })).field, 'virtio-fs.inodes[0].nodeid', 'the root nodeid is not restorable');
    t.is(refused(t, h.share, ino('a.txt', { nodeid: '100' })).field, 'virtio-fs.inodes[0].nodeid', 'at or past nextNodeid');
    t.is(refused(t, h.share, ino('a.txt', { nodeid: 2 })).field, 'virtio-fs.inodes[0].nodeid', 'u64s are decimal strings');
    t.is(refused(t, h.share, ino('a.txt', { nlookup: '0' })).field, 'virtio-fs.inodes[0].nlookup');
    t.is(refused(t, h.share, { ...base, inodes: [{ nodeid: '2', nlookup: '1', stale: true }, { nodeid: '2', nlookup: '1', stale: true }] }).field, 'virtio-fs.inodes[1].nodeid');
    t.is(refused(t, h.share, fh('a.txt', { fh: '100' })).field, 'virtio-fs.handles[0].fh');
    t.is(refused(t, h.share, { ...base, nextNodeid: '18446744073709551616' }).field, 'virtio-fs.nextNodeid');
    t.is(refused(t, h.share, { ...base, initialized: false, handles: [{ fh: '1', stale: true }] }).field, 'virtio-fs.initialized');
    t.is(refused(t, h.share, { ...base, format: 0 }).field, 'virtio-fs.format');
    const staleInodes = (n: number) => ({ ...base, nextNodeid: String(n + 2), inodes: Array.from({ length: n }, (_, i) => ({ nodeid: String(i + 2), nlookup: '1', stale: true })) });
    t.is(refused(t, h.share, staleInodes(257), { maxFds: 256 }).field, 'virtio-fs.inodes', 'more nodeids than the share has fds');
    const staleHandles = (n: number) => ({ ...base, nextFh: String(n + 1), handles: Array.from({ length: n }, (_, i) => ({ fh: String(i + 1), stale: true })) });
    t.is(refused(t, h.share, staleHandles(5), { maxHandles: 4 }).field, 'virtio-fs.handles');
    t.is(refused(t, h.share, staleHandles(F.MAX_HANDLES + 1)).field, 'virtio-fs.handles');
  } finally {
    h.close();
  }
});

test('a state path through a symlink restores stale (never followed); one inode under two nodeids keeps the first', (t) => {
  const h1 = new FuseHarness({}, (share, outside) => {
    tree(share);
    symlinkSync(outside, join(share, 'esc'));
  });
  let h2: FuseHarness | null = null;
  try {
    const state = {
      format: 1, initialized: true, nextNodeid: '10', nextFh: '10',
      inodes: [
        { nodeid: '2', nlookup: '1', kind: 'file', path: 'esc/secret' },
        { nodeid: '3', nlookup: '1', kind: 'dir', path: 'esc' },
        { nodeid: '4', nlookup: '1', kind: 'file', path: 'a.txt' },
        { nodeid: '5', nlookup: '1', kind: 'file', path: 'a.txt' },
      ],
      handles: [{ fh: '1', kind: 'file', path: 'esc/secret', mode: { access: 'read' } }],
    };
    h2 = restore(h1.share, state);
    t.is(h2.errno(() => h2!.getattr(2)), ESTALE);
    t.is(h2.errno(() => h2!.getattr(3)), ESTALE);
    t.is(h2.errno(() => h2!.read(1n, 0, 16)), ESTALE, 'the file behind the symlink was not opened');
    t.is(h2.getattr(4).size, 11n);
    t.is(h2.errno(() => h2!.getattr(5)), ESTALE, 'a second nodeid for one inode is stale');
    t.is(h2.fs.openFileCount, 0);
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a file the guest unlinked while open (its name now another file) is saved stale', (t) => {
  const h1 = new FuseHarness({}, tree);
  let h2: FuseHarness | null = null;
  try {
    const a = h1.lookup(1, 'a.txt').nodeid;
    const fh = h1.open(a, O_RDWR);
    h1.unlink(1, 'a.txt');
    writeFileSync(join(h1.share, 'a.txt'), 'another file');
    const state = save(h1);
    t.like(state.handles.find((x) => x.fh === String(fh)), { stale: true });
    t.like(state.inodes.find((x) => x.nodeid === String(a)), { stale: true });
    h2 = restore(h1.share, state);
    t.is(h2.errno(() => h2!.read(fh, 0, 64)), ESTALE, 'never the other file now at that name');
    t.is(h2.errno(() => h2!.getattr(a)), ESTALE);
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a request already in the ring at restore (a drain that yielded) is served with the restored nodeids', (t) => {
  const h1 = new FuseHarness({}, tree);
  const h2 = new FuseHarness({ raw: true, sharePath: h1.share });
  try {
    const b = h1.lookup(h1.lookup(1, 'dir').nodeid, 'b.txt').nodeid;
    const state = save(h1);
    const args = new W().u32(0).u32(0).u64(0).bytes();
    const msg = new Uint8Array(40 + args.length);
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, msg.length, true);
    dv.setUint32(4, F.FUSE_GETATTR, true);
    dv.setBigUint64(8, 77n, true);
    dv.setBigUint64(16, b, true);
    msg.set(args, 40);
    const out = h2.alloc(msg.length);
    h2.memory.write(out, msg);
    const reply = h2.alloc(4096);
    h2.driver.addChain([{ addr: out, len: msg.length, write: false }, { addr: reply, len: 4096, write: true }]);
    h2.driver.kick(); // published, but the device is not notified (kicks were suppressed)
    fsKind.restoreState!(h2.device, state, { active: true });
    const used = h2.driver.used();
    t.is(used.length, 1, 'served during the restore');
    const head = new DataView(h2.memory.read(reply, 16).slice().buffer);
    t.is(head.getInt32(4, true), 0, 'no error: the restored nodeid was known');
    t.is(head.getBigUint64(8, true), 77n);
  } finally {
    h2.close();
    h1.close();
  }
});
