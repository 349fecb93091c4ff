/**
 * Snapshot support shared by the two shared-directory servers (9P fids,
 * FUSE nodeids and handles): a node is saved as its path relative to the
 * share root (the chain of names the node table recorded), and re-established
 * on restore by walking that path from the (possibly new) root with
 * HostDir.lookup, one validated component at a time, exactly as a guest walk
 * would: RESOLVE_BENEATH, no symlink followed, never `.`/`..`/`/`. A path
 * that no longer resolves, or resolves to another kind of file, comes back
 * as `null`: the protocol marks that fid or nodeid stale (ESTALE on use).
 *
 * The state comes from a file: every reader here throws SnapshotStateError
 * naming the field before anything touches the host.
 *
 * I/O worker only.
 */
import { SnapshotStateError } from '../../../../lib/errors.js';
import { FsError } from './errors.js';
import type { HostDir } from './hostdir.js';
import type { OpenFile } from './file-io.js';
import { devOf } from './core.js';
import { componentBytes, cstr } from './names.js';
import { nodeKey, type Node, type NodeKind } from './nodes.js';
import * as S from './sys.js';
import type { OpenMode } from './types.js';

/**
 * Most bytes of one saved path ('/'-joined components). A node deeper than this
 * is saved without a path (it restores stale); restore refuses longer ones. Far
 * past PATH_MAX on purpose: fd-relative walks can go deeper than a path can name.
 */
export const MAX_SAVED_PATH_BYTES = 64 * 1024;

const SLASH = 0x2f;
const NODE_KINDS: readonly NodeKind[] = ['dir', 'file', 'symlink', 'fifo', 'socket', 'chr', 'blk'];
// ignoreBOM: a name may start with U+FEFF, which must survive the round trip.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Where a node is, as saved: a UTF-8 `path` ("" is the root), or `path64` (base64 of the raw bytes) when a name is not UTF-8. */
export type SavedPath = { path: string } | { path64: string };

/** How a file was open, as saved. `truncate` is never saved: a restore never truncates again. */
export interface SavedOpenMode {
  access: OpenMode['access'];
  append?: true;
  sync?: 'data' | 'full';
  directory?: true;
}

/**
 * Saves node paths. A node's path is the chain of names the node table
 * recorded; each link is checked against the host first (its name in its
 * parent must still be that inode), so a file the guest unlinked while holding
 * it, or a name the host since gave to another file, is not saved under a
 * path that now means something else: such a node gets no path (it restores
 * stale). One statx per node, each node checked once per saver.
 */
export class PathSaver {
  private readonly checked = new Map<Node, boolean>();
  private readonly statBuf = new Uint8Array(S.STATX_SIZE_BYTES);

  constructor(private readonly fs: HostDir) {}

  /** The path of `node` from the share root; null when a link no longer names its inode, or past MAX_SAVED_PATH_BYTES. */
  path(node: Node): SavedPath | null {
    const names: Uint8Array[] = [];
    let bytes = 0;
    for (let n = node; n !== this.fs.root; n = n.parent!) {
      if (!n.parent || !n.name || !this.current(n)) return null;
      bytes += n.name.length + (names.length > 0 ? 1 : 0);
      if (bytes > MAX_SAVED_PATH_BYTES) return null;
      names.push(n.name);
    }
    names.reverse();
    const joined = new Uint8Array(bytes);
    let at = 0;
    for (const name of names) {
      if (at > 0) joined[at++] = SLASH;
      joined.set(name, at);
      at += name.length;
    }
    try {
      return { path: utf8.decode(joined) };
    } catch {
      return { path64: Buffer.from(joined).toString('base64') };
    }
  }

  /** True when `n.name` in `n.parent` is still n's inode. */
  private current(n: Node): boolean {
    let ok = this.checked.get(n);
    if (ok === undefined) {
      ok = false;
      if (S.statx(n.parent!.fd, cstr(n.name!), S.AT_SYMLINK_NOFOLLOW, S.STATX_INO, this.statBuf) === 0) {
        const st = S.decodeStatx(this.statBuf);
        ok = nodeKey(devOf(st), st.ino) === n.key;
      }
      this.checked.set(n, ok);
    }
    return ok;
  }
}

/**
 * The components of the saved path in `entry` (its `path` or `path64` member), checked:
 * relative (no leading `/`), no empty, `.` or `..` component, no NUL, each name at most
 * 255 bytes, at most MAX_SAVED_PATH_BYTES in all. `[]` is the root.
 */
export function readSavedPath(field: string, entry: Record<string, unknown>): Uint8Array[] {
  let raw: Uint8Array;
  let where: string;
  if (entry.path !== undefined && entry.path64 !== undefined) throw new SnapshotStateError(`${field}.path64`, 'must not be given with path: one of them names the node', entry.path64);
  if (entry.path !== undefined) {
    where = `${field}.path`;
    if (typeof entry.path !== 'string') throw new SnapshotStateError(where, 'must be a string: a path relative to the share root', entry.path);
    raw = encoder.encode(entry.path);
  } else if (entry.path64 !== undefined) {
    where = `${field}.path64`;
    const v = entry.path64;
    if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64.test(v)) throw new SnapshotStateError(where, 'must be a base64 string', v);
    raw = new Uint8Array(Buffer.from(v, 'base64'));
  } else {
    throw new SnapshotStateError(`${field}.path`, 'is missing: every saved node needs its path relative to the share root', undefined);
  }
  if (raw.length > MAX_SAVED_PATH_BYTES) throw new SnapshotStateError(where, `is ${raw.length} bytes, at most ${MAX_SAVED_PATH_BYTES} allowed`, raw.length);
  if (raw.length === 0) return [];
  if (raw[0] === SLASH) throw new SnapshotStateError(where, 'must be relative to the share root, not absolute', preview(raw));
  const out: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i < raw.length && raw[i] !== SLASH) continue;
    const name = raw.subarray(start, i);
    try {
      out.push(componentBytes(name, 'restore'));
    } catch (e) {
      if (!(e instanceof FsError)) throw e;
      throw new SnapshotStateError(where, `has an invalid component (${e.message}): '.', '..', empty names and NUL stay out of a share`, preview(raw));
    }
    start = i + 1;
  }
  return out;
}

/** A saved NodeKind at `field`. */
export function readNodeKind(field: string, value: unknown): NodeKind {
  if (typeof value !== 'string' || !(NODE_KINDS as readonly string[]).includes(value)) throw new SnapshotStateError(field, `must be one of ${NODE_KINDS.join(', ')}`, value);
  return value as NodeKind;
}

/** An OpenFile's mode, as saved (truncate dropped). */
export function saveOpenMode(mode: OpenMode): SavedOpenMode {
  return {
    access: mode.access,
    ...(mode.append ? { append: true as const } : {}),
    ...(mode.sync ? { sync: mode.sync } : {}),
    ...(mode.directory ? { directory: true as const } : {}),
  };
}

/** A saved open mode at `field`, as the OpenMode to re-open with (never truncating). */
export function readOpenMode(field: string, value: unknown): OpenMode {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SnapshotStateError(field, 'must be an object', value);
  const m = value as Record<string, unknown>;
  if (m.access !== 'read' && m.access !== 'write' && m.access !== 'readwrite') throw new SnapshotStateError(`${field}.access`, "must be 'read', 'write' or 'readwrite'", m.access);
  if (m.append !== undefined && m.append !== true) throw new SnapshotStateError(`${field}.append`, 'must be true or absent', m.append);
  if (m.directory !== undefined && m.directory !== true) throw new SnapshotStateError(`${field}.directory`, 'must be true or absent', m.directory);
  if (m.sync !== undefined && m.sync !== 'data' && m.sync !== 'full') throw new SnapshotStateError(`${field}.sync`, "must be 'data', 'full' or absent", m.sync);
  return {
    access: m.access,
    ...(m.append ? { append: true } : {}),
    ...(m.sync ? { sync: m.sync } : {}),
    ...(m.directory ? { directory: true } : {}),
  };
}

/**
 * Re-establishes saved paths under a share, each distinct directory looked up
 * once (a cache of the prefixes walked, holding a reference each until
 * dispose()). Work is bounded: every successful lookup holds an fd of the
 * share's budget (EMFILE past it), and a failed prefix is remembered.
 */
export class PathResolver {
  /** Prefix key (parent's index and name) -> [index, node or null when it did not resolve]. */
  private readonly cache = new Map<string, [number, Node | null]>();

  constructor(private readonly fs: HostDir, private readonly field: string) {}

  /**
   * The node at `names` if it is a `kind`, with one reference for the caller;
   * null (stale) when a component is missing, not a directory, a symlink, or the
   * last one is another kind. Throws an Error when the host runs out of fds or memory.
   */
  resolve(names: readonly Uint8Array[], kind: NodeKind): Node | null {
    let node: Node = this.fs.root;
    let index = 0;
    for (const name of names) {
      const key = `${index}/${Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1')}`;
      let hit = this.cache.get(key);
      if (!hit) {
        hit = [this.cache.size + 1, this.lookup(node, name)];
        this.cache.set(key, hit);
      }
      if (hit[1] === null) return null;
      node = hit[1];
      index = hit[0];
    }
    return node.kind === kind ? this.fs.ref(node) : null;
  }

  /** `fs.open(node, mode)`, or null when the host refuses it now (the share became read-only, permissions...): stale. */
  open(node: Node, mode: OpenMode): OpenFile | null {
    try {
      return this.fs.open(node, mode);
    } catch (e) {
      return this.stale(e);
    }
  }

  /** Gives back the cache's references. */
  dispose(): void {
    for (const [, node] of this.cache.values()) if (node) this.fs.release(node);
    this.cache.clear();
  }

  private lookup(dir: Node, name: Uint8Array): Node | null {
    try {
      return this.fs.lookup(dir, name);
    } catch (e) {
      return this.stale(e);
    }
  }

  /** null for a refusal about the file itself; an Error for host exhaustion (the restore cannot be completed faithfully). */
  private stale(e: unknown): null {
    if (!(e instanceof FsError)) throw e;
    if (e.errno === S.EMFILE || e.errno === S.ENFILE || e.errno === S.ENOMEM) {
      throw new SnapshotStateError(this.field, `cannot be restored on this host: ${e.message} (raise RLIMIT_NOFILE or the share's maxFds)`, e.errno);
    }
    return null;
  }
}

function preview(raw: Uint8Array): string {
  return Buffer.from(raw.subarray(0, 64)).toString('latin1');
}
