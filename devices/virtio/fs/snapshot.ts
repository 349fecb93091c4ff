/**
 * Snapshot and restore of a FUSE session: the nodeid table (nodeid -> path
 * relative to the share root, kind, the kernel's lookup count), the open
 * handles (fh -> path, kind, open mode) and the next numbers handed out.
 * Restore walks each path again from the (possibly new) share root through
 * the sandboxed backend (backends/hostdir/snapshot.ts) and re-opens each
 * handle with its mode (never creating or truncating again). A nodeid whose
 * path vanished or names another kind of file now answers -ESTALE and still
 * takes its FORGETs; a handle whose file is gone answers -ESTALE and still
 * takes its RELEASE.
 *
 * Not saved, because the server keeps none of it: FUSE_INIT's negotiated
 * values (every reply uses the fixed MAX_WRITE / flags; only "initialized"
 * is state), generations (always 0), readdir cursors (READDIR carries the
 * host's d_off cookie, which the restored directory fd seeks to). Requests are
 * served synchronously (server.ts), so none is in flight at save time.
 */
import { SnapshotStateError } from '../../../lib/errors.js';
import { array, object } from '../../../lib/kvm/state-json.js';
import type { NodeKind, OpenMode } from '../backends/hostdir/index.js';
import {
  PathResolver, PathSaver, readNodeKind, readOpenMode, readSavedPath, saveOpenMode, type SavedOpenMode, type SavedPath,
} from '../backends/hostdir/snapshot.js';
import type { FuseServer } from './server.js';

/** The format of FuseSavedState; restore refuses any other. */
export const FUSE_STATE_FORMAT = 1;
const U64_MAX = (1n << 64n) - 1n;
const ROOT_NODEID = 1n;

/** One saved nodeid: its path and kind, or `stale`. u64 values are decimal strings. */
export type SavedInode = ({ nodeid: string; nlookup: string; kind: NodeKind } & SavedPath) | { nodeid: string; nlookup: string; stale: true };
/** One saved handle. */
export type SavedHandle = ({ fh: string; kind: NodeKind; mode: SavedOpenMode } & SavedPath) | { fh: string; stale: true };

/** What saveFuseState returns: JSON-able. */
export interface FuseSavedState {
  format: number;
  /** FUSE_INIT was answered. */
  initialized: boolean;
  nextNodeid: string;
  nextFh: string;
  /** Every nodeid the kernel holds but the root (1, which is always the share root). */
  inodes: SavedInode[];
  handles: SavedHandle[];
}

/** The session of `server` as JSON-able data. Called between two requests (never during one). */
export function saveFuseState(server: FuseServer): FuseSavedState {
  const t = server.tables();
  const paths = new PathSaver(server.fs);
  const inodes: SavedInode[] = [];
  for (const ino of t.inodes) {
    if (ino.nodeid === ROOT_NODEID) continue;
    const path = paths.path(ino.node);
    const base = { nodeid: String(ino.nodeid), nlookup: String(ino.nlookup) };
    inodes.push(path ? { ...base, kind: ino.node.kind, ...path } : { ...base, stale: true });
  }
  for (const [nodeid, nlookup] of t.staleInodes) inodes.push({ nodeid: String(nodeid), nlookup: String(nlookup), stale: true });
  const handles: SavedHandle[] = [];
  for (const [fh, file] of t.handles) {
    const path = file.closed ? null : paths.path(file.node);
    handles.push(path ? { fh: String(fh), kind: file.node.kind, mode: saveOpenMode(file.mode), ...path } : { fh: String(fh), stale: true });
  }
  for (const fh of t.staleHandles) handles.push({ fh: String(fh), stale: true });
  return { format: FUSE_STATE_FORMAT, initialized: server.initialized, nextNodeid: String(t.nextNodeid), nextFh: String(t.nextFh), inodes, handles };
}

type ParsedInode = { nodeid: bigint; nlookup: bigint; kind: NodeKind | null; names: Uint8Array[] };
type ParsedHandle = { fh: bigint; kind: NodeKind | null; names: Uint8Array[]; mode: OpenMode | null };

/**
 * Replaces the session of `server` with the saved `state`, after checking all
 * of it (SnapshotStateError naming the field: `virtio-fs.inodes[2].path`...).
 * Paths are resolved under the server's own share root. Throws, leaving the
 * server with empty tables (uninitialized), when the state is malformed or the
 * host cannot hold the restored nodes.
 */
export function restoreFuseState(server: FuseServer, state: unknown, field = 'virtio-fs'): void {
  const p = parseState(server, state, field);
  const resolver = new PathResolver(server.fs, field);
  try {
    server.beginRestore(p.initialized, p.nextNodeid, p.nextFh);
    for (const i of p.inodes) server.restoreInode(i.nodeid, i.kind ? resolver.resolve(i.names, i.kind) : null, i.nlookup);
    for (const h of p.handles) {
      const node = h.kind && h.mode ? resolver.resolve(h.names, h.kind) : null;
      const file = node && h.mode ? resolver.open(node, h.mode) : null;
      if (node) server.fs.release(node); // the open file holds its own reference
      server.restoreHandle(h.fh, file);
    }
  } catch (e) {
    server.resetTables();
    throw e;
  } finally {
    resolver.dispose();
  }
}

function parseState(server: FuseServer, state: unknown, field: string): { initialized: boolean; nextNodeid: bigint; nextFh: bigint; inodes: ParsedInode[]; handles: ParsedHandle[] } {
  const s = object(field, state);
  if (s.format !== FUSE_STATE_FORMAT) throw new SnapshotStateError(`${field}.format`, `is ${JSON.stringify(s.format)}, this flintvm reads format ${FUSE_STATE_FORMAT}: take the snapshot again with this version`, s.format);
  if (typeof s.initialized !== 'boolean') throw new SnapshotStateError(`${field}.initialized`, 'must be true or false', s.initialized);
  const nextNodeid = u64(`${field}.nextNodeid`, s.nextNodeid, 2n, U64_MAX);
  const nextFh = u64(`${field}.nextFh`, s.nextFh, 1n, U64_MAX);
  // Every live nodeid pins one of the share's fds: the backend's budget bounds the table.
  const inodeList = array(`${field}.inodes`, s.inodes, server.fs.maxFds);
  const handleList = array(`${field}.handles`, s.handles, server.maxHandles);
  if (!s.initialized && (inodeList.length > 0 || handleList.length > 0)) throw new SnapshotStateError(`${field}.initialized`, 'is false, but the state holds nodeids or handles (only an initialized session has them)', s.initialized);
  const nodeids = new Set<bigint>();
  const inodes = inodeList.map((v, i): ParsedInode => {
    const at = `${field}.inodes[${i}]`;
    const e = object(at, v);
    const nodeid = u64(`${at}.nodeid`, e.nodeid, 2n, nextNodeid - 1n);
    if (nodeids.has(nodeid)) throw new SnapshotStateError(`${at}.nodeid`, `nodeid ${nodeid} appears twice`, e.nodeid);
    nodeids.add(nodeid);
    const nlookup = u64(`${at}.nlookup`, e.nlookup, 1n, U64_MAX);
    if (e.stale === true) return { nodeid, nlookup, kind: null, names: [] };
    if (e.stale !== undefined) throw new SnapshotStateError(`${at}.stale`, 'must be true or absent', e.stale);
    return { nodeid, nlookup, kind: readNodeKind(`${at}.kind`, e.kind), names: readSavedPath(at, e) };
  });
  const fhs = new Set<bigint>();
  const handles = handleList.map((v, i): ParsedHandle => {
    const at = `${field}.handles[${i}]`;
    const e = object(at, v);
    const fh = u64(`${at}.fh`, e.fh, 1n, nextFh - 1n);
    if (fhs.has(fh)) throw new SnapshotStateError(`${at}.fh`, `fh ${fh} appears twice`, e.fh);
    fhs.add(fh);
    if (e.stale === true) return { fh, kind: null, names: [], mode: null };
    if (e.stale !== undefined) throw new SnapshotStateError(`${at}.stale`, 'must be true or absent', e.stale);
    const kind = readNodeKind(`${at}.kind`, e.kind);
    if (kind !== 'file' && kind !== 'dir') throw new SnapshotStateError(`${at}.kind`, `a ${kind} is never open`, kind);
    return { fh, kind, names: readSavedPath(at, e), mode: readOpenMode(`${at}.mode`, e.mode) };
  });
  return { initialized: s.initialized, nextNodeid, nextFh, inodes, handles };
}

/** A u64 saved as a decimal string, in [min, max]. */
function u64(field: string, value: unknown, min: bigint, max: bigint): bigint {
  if (typeof value !== 'string' || !/^(0|[1-9][0-9]{0,19})$/.test(value)) throw new SnapshotStateError(field, 'must be a decimal integer string', value);
  const n = BigInt(value);
  if (n < min || n > max) throw new SnapshotStateError(field, `must be in ${min}..${max}`, value);
  return n;
}
