/**
 * The backend's snapshot helpers on their own: PathSaver (a node's path under
 * the share root, checked against the host), readSavedPath (a path from a
 * state file, checked), PathResolver (a saved path walked again with the
 * sandbox rules), and the open-mode round trip.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostDir, openHostDir } from '../../../../../../devices/virtio/backends/hostdir/index.js';
import {
  MAX_SAVED_PATH_BYTES, PathResolver, PathSaver, readOpenMode, readSavedPath, saveOpenMode,
} from '../../../../../../devices/virtio/backends/hostdir/snapshot.js';
import { SnapshotStateError } from '../../../../../../lib/errors.js';

function withShare(fn: (t: ExecutionContext, fs: HostDir, share: string) => void): (t: ExecutionContext) => void {
  return (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'flintvm-hostdir-snap-'));
    const share = join(dir, 'share');
    mkdirSync(share);
    const h = openHostDir(share, { readOnly: false, field: 'x' });
    const fs = new HostDir(h.rootFd, { readOnly: false });
    try {
      fn(t, fs, share);
    } finally {
      fs.dispose();
      h.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('a name that is not UTF-8 is saved as path64 and resolves to the same inode', withShare((t, fs, share) => {
  const raw = Buffer.from([0x66, 0xff, 0xfe, 0x41]);
  mkdirSync(join(share, 'd'));
  writeFileSync(Buffer.concat([Buffer.from(`${share}/d/`), raw]), 'x');
  const d = fs.lookup(fs.root, 'd');
  const f = fs.lookup(d, new Uint8Array(raw));
  const saved = new PathSaver(fs).path(f);
  t.truthy(saved && 'path64' in saved, JSON.stringify(saved));
  const names = readSavedPath('e', JSON.parse(JSON.stringify(saved)) as Record<string, unknown>);
  t.is(names.length, 2);
  t.deepEqual(Buffer.from(names[1]!), raw);
  const r = new PathResolver(fs, 'e');
  const again = r.resolve(names, 'file');
  r.dispose();
  t.is(again, f, 'the same node (one per inode)');
  for (const n of [again!, f, d]) fs.release(n);
  t.is(fs.fdsInUse, 0, 'the resolver gave back its references');
}));

test('the root is the empty path; a UTF-8 path is saved as is (a leading U+FEFF included)', withShare((t, fs, share) => {
  mkdirSync(join(share, '\uFEFFdé'));
  const d = fs.lookup(fs.root, '\uFEFFdé');
  const saver = new PathSaver(fs);
  const root = saver.path(fs.root);
  const path = saver.path(d);
  fs.release(d);
  t.deepEqual(root, { path: '' });
  t.deepEqual(path, { path: '\uFEFFdé' }, 'a leading U+FEFF is part of the name, not a byte-order mark');
}));

test('readSavedPath refuses escapes and oversize paths naming the field', (t) => {
  for (const p of ['..', '../x', 'a/..', '/a', 'a//b', 'a/', '.', 'a/./b', 'a\0b', 'x'.repeat(256)]) {
    const e = t.throws(() => readSavedPath('fids[0]', { path: p }), { instanceOf: SnapshotStateError }, JSON.stringify(p));
    t.is(e!.field, 'fids[0].path');
  }
  t.is(t.throws(() => readSavedPath('f', { path: 'a/'.repeat(MAX_SAVED_PATH_BYTES / 2) + 'a' }), { instanceOf: SnapshotStateError })!.field, 'f.path');
  t.is(t.throws(() => readSavedPath('f', { path64: 'not base64!' }), { instanceOf: SnapshotStateError })!.field, 'f.path64');
  t.is(t.throws(() => readSavedPath('f', {}), { instanceOf: SnapshotStateError })!.field, 'f.path');
  t.is(t.throws(() => readSavedPath('f', { path: 'a', path64: 'YQ==' }), { instanceOf: SnapshotStateError })!.field, 'f.path64');
  t.deepEqual(readSavedPath('f', { path: '' }), []);
  t.deepEqual(readSavedPath('f', { path: 'a/b' }).map((b) => Buffer.from(b).toString()), ['a', 'b']);
});

test('open modes round trip without truncate; malformed ones are refused', (t) => {
  const saved = saveOpenMode({ access: 'write', truncate: true, append: true, sync: 'data' });
  t.deepEqual(saved, { access: 'write', append: true, sync: 'data' });
  t.deepEqual(readOpenMode('m', JSON.parse(JSON.stringify(saved))), { access: 'write', append: true, sync: 'data' });
  t.is(t.throws(() => readOpenMode('m', { access: 'read', sync: 'always' }), { instanceOf: SnapshotStateError })!.field, 'm.sync');
  t.is(t.throws(() => readOpenMode('m', null), { instanceOf: SnapshotStateError })!.field, 'm');
});
