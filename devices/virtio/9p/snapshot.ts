/**
 * Snapshot and restore of a 9P2000.L session: the negotiated msize and every
 * fid. A file or directory fid is saved as its path relative to the share
 * root, its kind and, when open, its open mode; restore walks that path again
 * from the (possibly new) share root through the sandboxed backend
 * (backends/hostdir/snapshot.ts) and re-opens open fids with their mode
 * (never creating, truncating or excluding again). A fid whose path vanished
 * or now names another kind of file is restored `stale`: every message on it
 * answers Rlerror(ESTALE), Tclunk works.
 *
 * Xattr fids: a Txattrwalk result (`xattr-read`) is saved with its bytes, a
 * Txattrcreate still collecting its value (`xattr-write`) with its file's
 * path, the name, flags, the value so far and how much of it was written
 * (bytes in base64; all values together at most MAX_SAVED_XATTR_BYTES).
 * One past that budget, or whose file is gone at restore, is `stale` with
 * `pendingXattr`: its Tclunk, which would have set the value, answers ESTALE,
 * so the guest's setxattr fails instead of silently doing nothing.
 *
 * Nothing is in flight at save time: the server answers each message
 * synchronously (server.ts), and the server keeps no readdir cursor (Treaddir
 * carries the host's d_off cookie, which the restored directory fd seeks to).
 */
import { SnapshotStateError } from '../../../lib/errors.js';
import { array, intIn, object, u32 } from '../../../lib/kvm/state-json.js';
import {
  PathResolver, PathSaver, readNodeKind, readOpenMode, readSavedPath, saveOpenMode, type SavedOpenMode, type SavedPath,
} from '../backends/hostdir/snapshot.js';
import type { NodeKind, OpenMode } from '../backends/hostdir/index.js';
import * as P from './constants.js';
import type { Fid, FidUid } from './fids.js';
import type { P9Server } from './server.js';

/** XATTR_NAME_MAX (linux/limits.h). */
const XATTR_NAME_MAX = 255;

/** The format of P9SavedState; restore refuses any other. */
export const P9_STATE_FORMAT = 1;
/** Most bytes of xattr fid data (read results and values being written) saved, all fids together. */
export const MAX_SAVED_XATTR_BYTES = 16 * 1024 * 1024;

/** One saved fid. `uid` is the attach's n_uname (null: none). */
export type SavedFid =
  | ({ fid: number; type: 'node'; uid: FidUid; kind: NodeKind; open?: SavedOpenMode } & SavedPath)
  | { fid: number; type: 'xattr-read'; uid: FidUid; data: string }
  | ({ fid: number; type: 'xattr-write'; uid: FidUid; kind: NodeKind; name: string; flags: number; value: string; covered: number } & SavedPath)
  | { fid: number; type: 'stale'; uid: FidUid; pendingXattr?: true };

/** What saveP9State returns: JSON-able. */
export interface P9SavedState {
  format: number;
  /** Negotiated msize; 0 when no session was negotiated. */
  msize: number;
  /** The session's protocol ('9P2000.L'), or null without a session. */
  version: string | null;
  fids: SavedFid[];
}

/** The session of `server` as JSON-able data. Called between two messages (never during one). */
export function saveP9State(server: P9Server): P9SavedState {
  const fids: SavedFid[] = [];
  let xattrBytes = 0;
  const paths = new PathSaver(server.fs);
  for (const [fid, state] of server.fids.entries()) fids.push(saveFid(paths, fid, state, () => xattrBytes, (n) => (xattrBytes += n)));
  return { format: P9_STATE_FORMAT, msize: server.msize, version: server.msize > 0 ? P.P9_VERSION_L : null, fids };
}

function saveFid(paths: PathSaver, fid: number, state: Fid, used: () => number, add: (n: number) => void): SavedFid {
  const { uid } = state;
  if (state.kind === 'node') {
    const path = paths.path(state.node);
    if (!path) return { fid, type: 'stale', uid };
    return { fid, type: 'node', uid, kind: state.node.kind, ...path, ...(state.file ? { open: saveOpenMode(state.file.mode) } : {}) };
  }
  if (state.kind === 'xattr-read' && used() + state.data.length <= MAX_SAVED_XATTR_BYTES) {
    add(state.data.length);
    return { fid, type: 'xattr-read', uid, data: base64(state.data) };
  }
  if (state.kind === 'xattr-write' && used() + state.value.length <= MAX_SAVED_XATTR_BYTES) {
    const path = paths.path(state.node);
    if (path) {
      add(state.value.length);
      const { name, flags, value, covered } = state;
      return { fid, type: 'xattr-write', uid, kind: state.node.kind, ...path, name: base64(name), flags, value: base64(value), covered };
    }
  }
  return { fid, type: 'stale', uid, ...(state.kind === 'xattr-write' || (state.kind === 'stale' && state.pendingXattr) ? { pendingXattr: true as const } : {}) };
}

/** One fid as read back from a state, checked but not yet resolved. */
type ParsedFid =
  | { fid: number; type: 'node'; uid: FidUid; kind: NodeKind; names: Uint8Array[]; open: OpenMode | null }
  | { fid: number; type: 'xattr-read'; uid: FidUid; data: Uint8Array }
  | { fid: number; type: 'xattr-write'; uid: FidUid; kind: NodeKind; names: Uint8Array[]; name: Uint8Array; flags: number; value: Uint8Array; covered: number }
  | { fid: number; type: 'stale'; uid: FidUid; pendingXattr: boolean };

/**
 * Replaces the session of `server` (a fresh one, or one to discard) with the
 * saved `state`, after checking all of it (SnapshotStateError naming the field:
 * `virtio-9p.fids[3].path`...). Paths are resolved under the server's own share
 * root. Throws, leaving the server without a session, when the state is
 * malformed or the host cannot hold the restored fids.
 */
export function restoreP9State(server: P9Server, state: unknown, field = 'virtio-9p'): void {
  const parsed = parseState(server, state, field);
  server.reset();
  const resolver = new PathResolver(server.fs, field);
  try {
    for (const f of parsed.fids) restoreFid(server, resolver, f);
    server.msize = parsed.msize;
  } catch (e) {
    server.reset();
    throw e;
  } finally {
    resolver.dispose();
  }
}

function restoreFid(server: P9Server, resolver: PathResolver, f: ParsedFid): void {
  const stale = { kind: 'stale' as const, uid: f.uid, pendingXattr: false };
  if (f.type === 'stale') return server.fids.set(f.fid, { ...stale, pendingXattr: f.pendingXattr });
  if (f.type === 'xattr-read') return server.fids.set(f.fid, { kind: 'xattr-read', data: f.data, uid: f.uid });
  if (f.type === 'xattr-write') {
    const node = resolver.resolve(f.names, f.kind);
    if (!node) return server.fids.set(f.fid, { ...stale, pendingXattr: true });
    const { name, flags, value, covered, uid } = f;
    return server.fids.set(f.fid, { kind: 'xattr-write', node, name, flags, value, covered, uid });
  }
  const node = resolver.resolve(f.names, f.kind);
  if (!node) return server.fids.set(f.fid, stale);
  let file = null;
  if (f.open) {
    file = resolver.open(node, f.open);
    if (!file) {
      server.fs.release(node);
      return server.fids.set(f.fid, stale);
    }
  }
  server.fids.set(f.fid, { kind: 'node', node, file, uid: f.uid });
}

function parseState(server: P9Server, state: unknown, field: string): { msize: number; fids: ParsedFid[] } {
  const s = object(field, state);
  if (s.format !== P9_STATE_FORMAT) throw new SnapshotStateError(`${field}.format`, `is ${JSON.stringify(s.format)}, this flintvm reads format ${P9_STATE_FORMAT}: take the snapshot again with this version`, s.format);
  const msize = s.msize === 0 ? 0 : intIn(`${field}.msize`, s.msize, P.P9_MIN_MSIZE, P.P9_MAX_MSIZE);
  if (msize > 0 && s.version !== P.P9_VERSION_L) throw new SnapshotStateError(`${field}.version`, `must be '${P.P9_VERSION_L}' (the only protocol served)`, s.version);
  if (msize === 0 && s.version !== null) throw new SnapshotStateError(`${field}.version`, 'must be null when msize is 0 (no session)', s.version);
  const list = array(`${field}.fids`, s.fids, server.fids.max);
  if (msize === 0 && list.length > 0) throw new SnapshotStateError(`${field}.fids`, 'must be empty when msize is 0 (no session holds fids)', list.length);
  const seen = new Set<number>();
  let xattrBytes = 0;
  const fids = list.map((v, i): ParsedFid => {
    const at = `${field}.fids[${i}]`;
    const e = object(at, v);
    const fid = u32(`${at}.fid`, e.fid);
    if (fid === P.P9_NOFID) throw new SnapshotStateError(`${at}.fid`, 'must not be NOFID', fid);
    if (seen.has(fid)) throw new SnapshotStateError(`${at}.fid`, `fid ${fid} appears twice`, fid);
    seen.add(fid);
    const uid = e.uid === null ? null : u32(`${at}.uid`, e.uid);
    switch (e.type) {
      case 'stale':
        if (e.pendingXattr !== undefined && e.pendingXattr !== true) throw new SnapshotStateError(`${at}.pendingXattr`, 'must be true or absent', e.pendingXattr);
        return { fid, type: 'stale', uid, pendingXattr: e.pendingXattr === true };
      case 'xattr-read': {
        const data = readBase64(`${at}.data`, e.data, P.P9_XATTR_SIZE_MAX);
        xattrBytes += data.length;
        if (xattrBytes > MAX_SAVED_XATTR_BYTES) throw new SnapshotStateError(`${at}.data`, `brings the xattr data to ${xattrBytes} bytes, at most ${MAX_SAVED_XATTR_BYTES} allowed`, xattrBytes);
        return { fid, type: 'xattr-read', uid, data };
      }
      case 'xattr-write': {
        const kind = readNodeKind(`${at}.kind`, e.kind);
        const names = readSavedPath(at, e);
        const name = readBase64(`${at}.name`, e.name, XATTR_NAME_MAX);
        if (name.length === 0 || name.includes(0)) throw new SnapshotStateError(`${at}.name`, 'must be 1..255 bytes without NUL', e.name);
        const flags = intIn(`${at}.flags`, e.flags, 0, P.P9_XATTR_CREATE | P.P9_XATTR_REPLACE);
        const value = readBase64(`${at}.value`, e.value, P.P9_XATTR_SIZE_MAX);
        const covered = intIn(`${at}.covered`, e.covered, 0, value.length);
        xattrBytes += value.length;
        if (xattrBytes > MAX_SAVED_XATTR_BYTES) throw new SnapshotStateError(`${at}.value`, `brings the xattr data to ${xattrBytes} bytes, at most ${MAX_SAVED_XATTR_BYTES} allowed`, xattrBytes);
        return { fid, type: 'xattr-write', uid, kind, names, name, flags, value, covered };
      }
      case 'node': {
        const kind = readNodeKind(`${at}.kind`, e.kind);
        const names = readSavedPath(at, e);
        const open = e.open === undefined ? null : readOpenMode(`${at}.open`, e.open);
        if (open && kind !== 'file' && kind !== 'dir') throw new SnapshotStateError(`${at}.open`, `a ${kind} is never open`, e.open);
        return { fid, type: 'node', uid, kind, names, open };
      }
      default:
        throw new SnapshotStateError(`${at}.type`, "must be 'node', 'xattr-read', 'xattr-write' or 'stale'", e.type);
    }
  });
  return { msize, fids };
}

function base64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

function readBase64(field: string, value: unknown, max: number): Uint8Array {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new SnapshotStateError(field, 'must be a base64 string', typeof value === 'string' ? value.slice(0, 32) : value);
  if (value.length > Math.ceil(max / 3) * 4) throw new SnapshotStateError(field, `holds more than ${max} bytes`, value.length);
  return new Uint8Array(Buffer.from(value, 'base64'));
}
