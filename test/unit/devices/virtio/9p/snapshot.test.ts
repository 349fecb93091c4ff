/**
 * virtio-9p snapshot hooks (p9Kind.saveState / restoreState) without KVM: a
 * session is saved from one server, JSON round-tripped, and restored into a
 * fresh server over the same share (or a copy of it); fids continue, vanished
 * files answer ESTALE, and a hostile state file is refused naming the field.
 */
import test, { type ExecutionContext } from 'ava';
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { p9Kind } from '../../../../../devices/virtio/9p/kind.js';
import { MAX_SAVED_XATTR_BYTES, type P9SavedState } from '../../../../../devices/virtio/9p/snapshot.js';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import { bytes, message, MSIZE, P9Harness, ROOT_FID, text } from './p9-harness.js';
import { readHeader } from '../../../../../devices/virtio/9p/wire.js';

type T = ExecutionContext;
const EBADF = 9;
const ESTALE = 116;
const RDWR = 2;
const DIRECTORY = 0o200000;
const NAMES = ['a.txt', 'dir', 'e1', 'e2', 'e3', 'e4', 'e5', 'gone.txt', 'kind-change'];

function tree(share: string): void {
  writeFileSync(join(share, 'a.txt'), 'hello world');
  writeFileSync(join(share, 'gone.txt'), 'soon gone');
  mkdirSync(join(share, 'dir'));
  writeFileSync(join(share, 'dir', 'b.txt'), 'bee');
  for (let i = 1; i <= 5; i++) writeFileSync(join(share, `e${i}`), `entry ${i}`);
  writeFileSync(join(share, 'kind-change'), 'a file for now');
}

/** The state of `h`, through the kind hook and a JSON round trip (as it travels in a state file). */
function save(h: P9Harness): P9SavedState {
  return JSON.parse(JSON.stringify(p9Kind.saveState!(h.device))) as P9SavedState;
}

/** A fresh, un-negotiated server over `share` with `state` restored into it. */
function restore(share: string, state: unknown, opts: { maxFids?: number; readOnly?: boolean } = {}): P9Harness {
  const h = new P9Harness({ raw: true, sharePath: share, ...opts });
  try {
    p9Kind.restoreState!(h.device, state, { active: true });
    // The harness hands out fid numbers from where h1 started: move past the restored ones.
    const top = Math.max(0, ...[...h.server.fids.entries()].map(([fid]) => fid));
    while (h.fid() <= top);
  } catch (e) {
    h.close();
    throw e;
  }
  return h;
}

/** The state error restoring `state` throws (the server is left without a session and holds no fd). */
function refused(t: T, share: string, state: unknown, opts: { maxFids?: number } = {}): SnapshotStateError {
  const h = new P9Harness({ raw: true, sharePath: share, ...opts });
  try {
    const e = t.throws(() => p9Kind.restoreState!(h.device, state, { active: true }), { instanceOf: SnapshotStateError })!;
    t.is(h.server.msize, 0, 'no session after a refused restore');
    t.is(h.server.fids.size, 0);
    t.is(h.fs.fdsInUse, 0, 'nothing half-built holds an fd');
    return e;
  } finally {
    h.close();
  }
}

/** A session with: an open read-write file written through, a directory read part way, an unopened fid, an xattr list fid. */
function session(h: P9Harness): { file: number; dir: number; sub: number; gone: number; change: number; xattr: number; offset: bigint; firstPage: string[] } {
  const file = h.walkTo('a.txt');
  h.lopen(file, RDWR);
  t0(h.write(file, 0, bytes('HELLO')) === 5);
  const dir = h.walkTo();
  h.lopen(dir, P.P9_DOTL_RDONLY | DIRECTORY);
  const page = h.readdir(dir, 0n, 24 + 3 * 28); // room for a few entries only
  t0(page.length > 0);
  const sub = h.walkTo('dir', 'b.txt');
  const gone = h.walkTo('gone.txt');
  h.lopen(gone, P.P9_DOTL_RDONLY);
  const change = h.walkTo('kind-change');
  const xattr = h.fid();
  h.xattrwalk(sub, xattr, '');
  return { file, dir, sub, gone, change, xattr, offset: page[page.length - 1]!.offset, firstPage: page.map((e) => e.name) };
}

function t0(ok: boolean): void {
  if (!ok) throw new Error('session setup failed');
}

test('a restored session continues: msize, open files, readdir offsets, walks from old fids', (t) => {
  const h1 = new P9Harness({}, tree);
  let h2: P9Harness | null = null;
  try {
    const s = session(h1);
    const state = save(h1);
    t.is(state.msize, MSIZE);
    t.is(state.version, '9P2000.L');
    t.is(state.fids.length, h1.server.fids.size);
    t.like(state.fids.find((f) => f.fid === s.file), { type: 'node', kind: 'file', path: 'a.txt', open: { access: 'readwrite' } });
    t.like(state.fids.find((f) => f.fid === s.sub), { type: 'node', kind: 'file', path: 'dir/b.txt' });
    t.like(state.fids.find((f) => f.fid === ROOT_FID), { type: 'node', kind: 'dir', path: '' });

    h2 = restore(h1.share, state);
    t.is(h2.server.msize, MSIZE);
    t.is(h2.server.fids.size, state.fids.length);
    t.is(text(h2.read(s.file, 0, 64)), 'HELLO world', 'the write before the snapshot, read through the restored fid');
    t.is(h2.write(s.file, 11, bytes('!')), 1);
    t.is(readFileSync(join(h2.share, 'a.txt'), 'utf8'), 'HELLO world!', 'a write after the restore lands in the host file');
    t.true(s.firstPage.length < NAMES.length, 'the first page was partial');
    const rest: string[] = [];
    for (let off = s.offset; ;) {
      const ents = h2.readdir(s.dir, off, 8192);
      if (ents.length === 0) break;
      rest.push(...ents.map((e) => e.name));
      off = ents[ents.length - 1]!.offset;
    }
    t.deepEqual([...s.firstPage, ...rest].filter((n) => n !== '.' && n !== '..').sort(), NAMES, 'readdir continues from the saved offset: every entry once');
    t.is(h2.getattr(s.sub).size, 3n);
    const up = h2.fid();
    t.is(h2.walk(s.sub, up, []).length, 0);
    t.is(h2.errno(() => h2!.walk(ROOT_FID, s.file, [])), 22, 'restored fid numbers are taken');
    const d = h2.fid();
    h2.walk(ROOT_FID, d, ['dir']);
    t.is(h2.listdir(d).filter((n) => n !== '.' && n !== '..').join(), 'b.txt', 'walks from the restored root fid');
    t.is(h2.read(s.xattr, 0, 4096).length, 0, 'the xattr list fid keeps its (empty) data');
    for (const f of [s.file, s.dir, s.sub, s.gone, s.change, s.xattr, up, d]) h2.clunk(f);
    t.is(h2.fs.fdsInUse, 0, 'every restored reference is given back by the clunks (none leaked by the restore)');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a file deleted or replaced by another kind between save and restore answers ESTALE; clunk works', (t) => {
  const h1 = new P9Harness({}, tree);
  const share = h1.share;
  let h2: P9Harness | null = null;
  try {
    const s = session(h1);
    const pending = h1.walkTo('gone.txt');
    h1.xattrcreate(pending, 'user.x', 4);
    const state = save(h1);
    t.like(state.fids.find((f) => f.fid === pending), { type: 'xattr-write', path: 'gone.txt', flags: 0, covered: 0 });
    unlinkSync(join(share, 'gone.txt'));
    unlinkSync(join(share, 'kind-change'));
    mkdirSync(join(share, 'kind-change'));

    h2 = restore(share, state);
    t.is(h2.errno(() => h2!.read(s.gone, 0, 16)), ESTALE, 'an open fid whose file vanished');
    t.is(h2.errno(() => h2!.getattr(s.change)), ESTALE, 'a path that is now a directory');
    t.is(h2.errno(() => h2!.walk(s.change, h2!.fid(), [])), ESTALE);
    t.is(h2.errno(() => h2!.lopen(s.change, P.P9_DOTL_RDONLY)), ESTALE);
    t.is(h2.errno(() => h2!.remove(s.gone)), ESTALE, 'Tremove of a stale fid (which clunks it)');
    t.is(h2.errno(() => h2!.clunk(s.gone)), EBADF);
    h2.clunk(s.change);
    t.is(h2.errno(() => h2!.clunk(pending)), ESTALE, 'the setxattr whose file vanished fails at its clunk');
    t.is(h2.errno(() => h2!.clunk(pending)), EBADF, '... and the fid is gone');
    t.is(text(h2.read(s.file, 0, 64)), 'HELLO world', 'the other fids are fine');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('restore over a copy of the tree serves the copy', (t) => {
  const h1 = new P9Harness({}, tree);
  const copy = `${h1.dir}-copy`;
  let h2: P9Harness | null = null;
  try {
    const s = session(h1);
    const state = save(h1);
    cpSync(h1.share, copy, { recursive: true });
    writeFileSync(join(copy, 'a.txt'), 'COPY! world');
    h2 = restore(copy, state);
    t.is(text(h2.read(s.file, 0, 64)), 'COPY! world');
    h2.write(s.file, 0, bytes('c'));
    t.is(readFileSync(join(copy, 'a.txt'), 'utf8'), 'cOPY! world');
    t.is(readFileSync(join(h1.share, 'a.txt'), 'utf8'), 'HELLO world', 'the original tree is untouched');
    t.is(h2.getattr(s.sub).size, 3n);
  } finally {
    h2?.close();
    h1.close();
    rmSync(copy, { recursive: true, force: true });
  }
});

test('hostile states are refused naming the field: escaping paths, bad kinds, oversized tables', (t) => {
  const h = new P9Harness({}, (share, outside) => {
    tree(share);
    symlinkSync(outside, join(share, 'esc'));
  });
  try {
    const base = { format: 1, msize: MSIZE, version: '9P2000.L' };
    const node = (path: unknown, extra: object = {}) => ({ ...base, fids: [{ fid: 1, type: 'node', uid: 0, kind: 'file', path, ...extra }] });
    t.is(refused(t, h.share, node('../outside/secret')).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, node('/etc/passwd')).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, node('dir/../../outside/secret')).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, node('dir//b.txt')).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, node('./a.txt')).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, node(42)).field, 'virtio-9p.fids[0].path');
    t.is(refused(t, h.share, { ...base, fids: [{ fid: 1, type: 'node', uid: 0, kind: 'file', path64: Buffer.from('a\0b').toString('base64') }] }).field, 'virtio-9p.fids[0].path64');
    t.is(refused(t, h.share, node('a.txt', { kind: 'door' })).field, 'virtio-9p.fids[0].kind');
    t.is(refused(t, h.share, node('esc', { kind: 'symlink', open: { access: 'read' } })).field, 'virtio-9p.fids[0].open');
    t.is(refused(t, h.share, node('a.txt', { open: { access: 'read', truncate: true, append: 1 } })).field, 'virtio-9p.fids[0].open.append');
    t.is(refused(t, h.share, node('a.txt', { fid: P.P9_NOFID })).field, 'virtio-9p.fids[0].fid');
    t.is(refused(t, h.share, node('a.txt', { uid: -1 })).field, 'virtio-9p.fids[0].uid');
    t.is(refused(t, h.share, { ...base, fids: [{ fid: 1, type: 'stale', uid: null }, { fid: 1, type: 'stale', uid: null }] }).field, 'virtio-9p.fids[1].fid');
    t.is(refused(t, h.share, { ...base, msize: 100 }).field, 'virtio-9p.msize');
    t.is(refused(t, h.share, { ...base, format: 2 }).field, 'virtio-9p.format');
    t.is(refused(t, h.share, { ...base, version: '9P2000.u', fids: [] }).field, 'virtio-9p.version');
    t.is(refused(t, h.share, { format: 1, msize: 0, version: null, fids: [{ fid: 1, type: 'stale', uid: null }] }).field, 'virtio-9p.fids');
    t.is(refused(t, h.share, 'not an object').field, 'virtio-9p');
    const stale = (n: number) => ({ ...base, fids: Array.from({ length: n }, (_, i) => ({ fid: i, type: 'stale', uid: null })) });
    t.is(refused(t, h.share, stale(9), { maxFids: 8 }).field, 'virtio-9p.fids', 'more fids than the server allows');
    t.is(refused(t, h.share, stale(P.P9_MAX_FIDS + 1)).field, 'virtio-9p.fids');
    const big = Buffer.alloc(P.P9_XATTR_SIZE_MAX).toString('base64');
    const many = Math.floor(MAX_SAVED_XATTR_BYTES / P.P9_XATTR_SIZE_MAX) + 1;
    t.is(refused(t, h.share, { ...base, fids: Array.from({ length: many }, (_, i) => ({ fid: i, type: 'xattr-read', uid: null, data: big })) }).field, `virtio-9p.fids[${many - 1}].data`);
    t.is(refused(t, h.share, { ...base, fids: [{ fid: 1, type: 'xattr-read', uid: null, data: Buffer.alloc(P.P9_XATTR_SIZE_MAX + 3).toString('base64') }] }).field, 'virtio-9p.fids[0].data');
  } finally {
    h.close();
  }
});

test('a state path through a symlink, or naming a symlink as a directory, restores stale (never followed)', (t) => {
  const h1 = new P9Harness({}, (share, outside) => {
    tree(share);
    symlinkSync(outside, join(share, 'esc'));
  });
  let h2: P9Harness | null = null;
  try {
    const state = {
      format: 1, msize: MSIZE, version: '9P2000.L', fids: [
        { fid: 1, type: 'node', uid: 0, kind: 'file', path: 'esc/secret', open: { access: 'read' } },
        { fid: 2, type: 'node', uid: 0, kind: 'dir', path: 'esc' },
        { fid: 3, type: 'node', uid: 0, kind: 'symlink', path: 'esc' },
      ],
    };
    h2 = restore(h1.share, state);
    t.is(h2.errno(() => h2!.read(1, 0, 64)), ESTALE, 'the file behind the symlink was not opened');
    t.is(h2.errno(() => h2!.walk(2, 4, ['secret'])), ESTALE);
    t.is(h2.readlink(3), h1.outside, 'the symlink itself is a symlink fid');
    t.is(h2.fs.openFileCount, 0);
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a file the guest unlinked while holding it (and whose name now holds another file) is saved stale', (t) => {
  const h1 = new P9Harness({}, tree);
  let h2: P9Harness | null = null;
  try {
    const f = h1.walkTo('a.txt');
    h1.lopen(f, RDWR);
    h1.unlinkat(ROOT_FID, 'a.txt');
    writeFileSync(join(h1.share, 'a.txt'), 'another file');
    t.is(text(h1.read(f, 0, 64)), 'hello world', 'the open-unlinked file before the snapshot');
    const state = save(h1);
    t.like(state.fids.find((x) => x.fid === f), { type: 'stale' });
    h2 = restore(h1.share, state);
    t.is(h2.errno(() => h2!.read(f, 0, 64)), ESTALE, 'never the other file now at that name');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a request already in the ring at restore (a drain that yielded) is served with the restored fids', (t) => {
  const h1 = new P9Harness({}, tree);
  const h2 = new P9Harness({ raw: true, sharePath: h1.share });
  try {
    const f = h1.walkTo('dir', 'b.txt');
    const state = save(h1);
    const msg = message(P.P9_TGETATTR, 7, (w) => w.u32(f).u64(0x3fffn));
    const out = h2.alloc(msg.length);
    h2.memory.write(out, msg);
    const reply = h2.alloc(4096);
    h2.driver.addChain([{ addr: out, len: msg.length, write: false }, { addr: reply, len: 4096, write: true }]);
    h2.driver.kick(); // published, but the device is not notified (kicks were suppressed)
    p9Kind.restoreState!(h2.device, state, { active: true });
    const used = h2.driver.used();
    t.is(used.length, 1, 'served during the restore');
    t.is(readHeader(h2.memory.read(reply, 7)).type, P.P9_RGETATTR, 'with the restored fid');
  } finally {
    h2.close();
    h1.close();
  }
});

test('restored onto a read-only share, a fid open for writing is stale and the rest still read', (t) => {
  const h1 = new P9Harness({}, tree);
  let h2: P9Harness | null = null;
  try {
    const s = session(h1);
    const ro = h1.walkTo('dir', 'b.txt');
    h1.lopen(ro, P.P9_DOTL_RDONLY);
    const state = save(h1);
    h2 = restore(h1.share, state, { readOnly: true });
    t.is(h2.errno(() => h2!.read(s.file, 0, 16)), ESTALE, 'the read-write fid could not be re-opened');
    t.is(text(h2.read(ro, 0, 16)), 'bee');
  } finally {
    h2?.close();
    h1.close();
  }
});

test('a Txattrcreate in progress continues after the restore: the rest of the value, then the clunk sets it', (t) => {
  const h1 = new P9Harness({}, tree);
  let h2: P9Harness | null = null;
  try {
    const f = h1.walkTo('a.txt');
    h1.xattrcreate(f, 'user.snap', 6);
    h1.write(f, 0, bytes('abc'));
    const state = save(h1);
    t.like(state.fids.find((x) => x.fid === f), { type: 'xattr-write', kind: 'file', path: 'a.txt', covered: 3 });
    h2 = restore(h1.share, state);
    h2.write(f, 3, bytes('def'));
    h2.clunk(f); // sets it (user xattrs on the temp dir, as p9-ops.test.ts assumes)
    t.is(text(h2.getxattr(h2.walkTo('a.txt'), 'user.snap')), 'abcdef');
    t.is(h2.errno(() => h2!.clunk(f)), EBADF);
    const bad = (extra: object) => ({ format: 1, msize: MSIZE, version: '9P2000.L', fids: [{ fid: 1, type: 'xattr-write', uid: 0, kind: 'file', path: 'a.txt', name: Buffer.from('user.x').toString('base64'), flags: 0, value: Buffer.from('ab').toString('base64'), covered: 1, ...extra }] });
    t.is(refused(t, h1.share, bad({ covered: 3 })).field, 'virtio-9p.fids[0].covered');
    t.is(refused(t, h1.share, bad({ flags: 4 })).field, 'virtio-9p.fids[0].flags');
    t.is(refused(t, h1.share, bad({ name: '' })).field, 'virtio-9p.fids[0].name');
    t.is(refused(t, h1.share, bad({ path: '../a.txt' })).field, 'virtio-9p.fids[0].path');
  } finally {
    h2?.close();
    h1.close();
  }
});
