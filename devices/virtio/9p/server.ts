/**
 * The 9P2000.L server of one virtio-9p device: session state (msize, fids),
 * message dispatch, and the session messages (Tversion, Tattach, Tflush,
 * Twalk, Tclunk, Tremove). File, directory and xattr messages are in
 * ops-file.ts and ops-dir.ts. Host access goes through the HostDir backend,
 * which enforces the sandbox; this layer enforces the protocol: fid states,
 * message lengths, reply sizes.
 *
 * handle() never throws: a backend FsError becomes Rlerror with its errno,
 * a message cut short (WireError) Rlerror(EINVAL), anything else Rlerror(EIO).
 * I/O worker thread; synchronous (so Tflush has nothing to cancel).
 */
import { fail, FsError } from '../backends/hostdir/errors.js';
import type { HostDir, Node, OpenFile, Owner } from '../backends/hostdir/index.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { log } from '../../../lib/log.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';
import type { Segment } from '../queue/types.js';
import * as P from './constants.js';
import { FidTable, type FidUid, type LiveFid } from './fids.js';
import { FILE_OPS } from './ops-file.js';
import { DIR_OPS } from './ops-dir.js';
import { WireError, type MessageReader, type Qid, type ReplyWriter } from './wire.js';
import * as W from './wire.js';
import { EMSGSIZE } from '../../../lib/sys.js';

const debug = log('virtio:9p');
const decoder = new TextDecoder();

/** Where a reply goes, as the queue handler knows it. */
export interface ReplyContext {
  readonly memory: GuestMemory;
  /** Most bytes the whole reply may take: min(the chain's writable bytes, msize - 1; Linux rejects a reply of msize). */
  readonly room: number;
  /** The chain's writable segments for `length` data bytes placed after an 11-byte reply header (Rread, zero copy). */
  dataSegments(length: number): readonly Segment[];
  /** Twrite: the chain's readable segments after the 23-byte header, up to the message size. */
  readonly writeData: readonly Segment[];
}

/** What handle() produced: the reply type; the body is in the writer, `inline` data bytes follow it in guest memory. */
export interface ReplyInfo {
  readonly type: number;
  readonly inline: number;
}

/** One message handler: reads the body, acts, writes the reply body; returns the reply type (and in-place data bytes). */
export type Op = (s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext) => number | ReplyInfo;

/** Counters, for tests and diagnostics. */
export interface P9Stats {
  requests: number;
  errors: number;
}

export class P9Server {
  /** Negotiated msize; 0 until a successful Tversion (then nothing but Tversion is accepted). */
  msize = 0;
  readonly fids: FidTable;
  readonly stats: P9Stats = { requests: 0, errors: 0 };
  private readonly ops = new Map<number, Op>();
  private readonly limitLog = new RateLimitedLog(debug, 'limit');

  /**
   * `maxFids`, `maxXattrBytes` and `maxLockRanges` bound the session's fid table (defaults P9_MAX_FIDS,
   * P9_MAX_XATTR_BYTES, P9_MAX_LOCK_RANGES; tests lower them).
   */
  constructor(readonly fs: HostDir, maxFids = P.P9_MAX_FIDS, maxXattrBytes = P.P9_MAX_XATTR_BYTES, maxLockRanges = P.P9_MAX_LOCK_RANGES) {
    this.fids = new FidTable(fs, maxFids, maxXattrBytes, maxLockRanges);
    this.ops.set(P.P9_TATTACH, (s, r, w) => s.attach(r, w));
    this.ops.set(P.P9_TFLUSH, (_s, r) => (W.tflush(r), P.P9_RFLUSH));
    this.ops.set(P.P9_TWALK, (s, r, w, ctx) => s.walk(r, w, ctx));
    this.ops.set(P.P9_TCLUNK, (s, r) => s.clunk(r));
    this.ops.set(P.P9_TREMOVE, (s, r) => s.remove(r));
    this.ops.set(P.P9_TAUTH, () => this.fail(P.EOPNOTSUPP, 'Tauth: no authentication is needed'));
    for (const [type, op] of [...FILE_OPS, ...DIR_OPS]) this.ops.set(type, op);
  }

  /** The largest message accepted now: msize once negotiated, P9_MAX_MSIZE for the Tversion before. */
  get messageLimit(): number {
    return this.msize || P.P9_MAX_MSIZE;
  }

  /**
   * Runs one message of `type` whose body `r` holds; the reply body goes to `w`
   * (positioned after the 7-byte header). Never throws.
   */
  handle(type: number, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): ReplyInfo {
    this.stats.requests++;
    const mark = w.length;
    try {
      if (type === P.P9_TVERSION) return { type: this.version(r, w), inline: 0 };
      const op = this.ops.get(type);
      if (!op) this.fail(P.EOPNOTSUPP, `message type ${type}`);
      if (this.msize === 0) this.fail(P.EINVAL, 'no session: Tversion first');
      const got = op(this, r, w, ctx);
      return typeof got === 'number' ? { type: got, inline: 0 } : got;
    } catch (e) {
      this.stats.errors++;
      w.truncate(mark);
      w.u32(errnoOf(e, type));
      return { type: P.P9_RLERROR, inline: 0 };
    }
  }

  /** Forgets the session (device reset): every fid is clunked, msize un-negotiated. */
  reset(): void {
    this.fids.clear();
    this.msize = 0;
  }

  /** Ends the server: the session, then the backend's fds. */
  dispose(): void {
    this.reset();
    this.fs.dispose();
  }

  // ---- helpers for the ops ----

  /** Throws the FsError that becomes Rlerror(errno). */
  fail(errno: number, what: string): never {
    fail(errno, '9p', what);
  }

  /** EMSGSIZE unless a reply of `bytes` (header included) fits. Checked BEFORE acting, so a mutation is never lost for want of room. */
  needRoom(ctx: ReplyContext, bytes: number): void {
    if (bytes > ctx.room) this.fail(EMSGSIZE, `a ${bytes}-byte reply does not fit ${ctx.room} bytes`);
  }

  /** The state of `fid` (EBADF when unknown, ESTALE when its file vanished across a snapshot restore). */
  fid(fid: number): LiveFid {
    const s = this.fids.get(fid);
    if (!s) this.fail(P.EBADF, `fid ${fid} is not in use`);
    if (s.kind === 'stale') this.fail(P.ESTALE, `fid ${fid} names a file that was not found again after a snapshot restore`);
    return s;
  }

  /** A file/directory fid (EBADF unknown, EINVAL for an xattr fid). */
  nodeFid(fid: number): Extract<LiveFid, { kind: 'node' }> {
    const s = this.fid(fid);
    if (s.kind !== 'node') this.fail(P.EINVAL, `fid ${fid} is an xattr fid`);
    return s;
  }

  /** A file/directory fid that has not been opened (for Tlopen, Tlcreate, Txattrcreate). */
  unopenedFid(fid: number): Extract<LiveFid, { kind: 'node' }> {
    const s = this.nodeFid(fid);
    if (s.file) this.fail(P.EINVAL, `fid ${fid} is already open`);
    return s;
  }

  /** The open file of `fid` (EBADF when it was not opened). */
  openFile(fid: number): OpenFile {
    const s = this.nodeFid(fid);
    if (!s.file) this.fail(P.EBADF, `fid ${fid} is not open`);
    return s.file;
  }

  /** EINVAL unless `fid` is a number a new fid may take (free, not NOFID); EMFILE when the table is full. */
  newFid(fid: number): void {
    if (fid === P.P9_NOFID || this.fids.has(fid)) this.fail(P.EINVAL, `fid ${fid} is already in use`);
    if (this.fids.full) this.fail(P.EMFILE, `${this.fids.size} fids in use`);
  }

  /** ENOMEM unless `bytes` more of xattr data fit the session's budget (FidTable.maxXattrBytes). */
  xattrRoom(bytes: number): void {
    if (this.fids.xattrFits(bytes)) return;
    this.limitLog.note('xattr data: %d bytes held, %d more would pass the %d-byte limit; ENOMEM', this.fids.xattrBytes, bytes, this.fids.maxXattrBytes);
    this.fail(P.ENOMEM, `xattr data: ${this.fids.xattrBytes} of ${this.fids.maxXattrBytes} bytes held`);
  }

  /** The owner a create by `uid` with group `gid` asks for (none when the attach named no uid). */
  owner(uid: FidUid, gid: number): Owner | undefined {
    return uid === null ? undefined : { uid, gid };
  }

  qid(node: Node): Qid {
    return { type: qidType(node.kind), version: 0, path: node.id };
  }

  // ---- session messages ----

  /** Tversion: msize[4] version[s] -> Rversion: msize[4] version[s]. Starts a new session: every fid is clunked. */
  private version(r: MessageReader, w: ReplyWriter): number {
    const t = W.tversion(r);
    const clientMsize = t.msize;
    const version = decoder.decode(t.version);
    this.fids.clear();
    this.msize = 0;
    if (clientMsize < P.P9_MIN_MSIZE) this.fail(P.EINVAL, `msize ${clientMsize} is below ${P.P9_MIN_MSIZE}`);
    const msize = Math.min(clientMsize, P.P9_MAX_MSIZE);
    // "9P2000.L" or "9P2000.L.<anything>" is ours; any other version gets "unknown" and no session.
    const ok = version === P.P9_VERSION_L || version.startsWith(`${P.P9_VERSION_L}.`);
    if (ok) this.msize = msize;
    debug('Tversion %s msize %d -> %s msize %d', JSON.stringify(version.slice(0, 32)), clientMsize, ok ? P.P9_VERSION_L : P.P9_VERSION_UNKNOWN, msize);
    w.u32(msize).str(new TextEncoder().encode(ok ? P.P9_VERSION_L : P.P9_VERSION_UNKNOWN));
    return P.P9_RVERSION;
  }

  /** Tattach: fid[4] afid[4] uname[s] aname[s] n_uname[4] -> Rattach: qid. The fid is the share root, whatever aname says. */
  private attach(r: MessageReader, w: ReplyWriter): number {
    const { fid, afid, uname, aname, nUname } = W.tattach(r);
    if (afid !== P.P9_NOFID) this.fail(P.EINVAL, 'Tattach with an afid: no authentication is needed');
    this.newFid(fid);
    const root = this.fs.ref(this.fs.root);
    this.fids.set(fid, { kind: 'node', node: root, file: null, uid: nUname === P.P9_NOFID ? null : nUname });
    if (debug.enabled) debug('Tattach fid %d uname %s aname %s n_uname %d', fid, JSON.stringify(decoder.decode(uname.slice(0, 64))), JSON.stringify(decoder.decode(aname.slice(0, 64))), nUname);
    w.qid(this.qid(root));
    return P.P9_RATTACH;
  }

  /**
   * Twalk: fid[4] newfid[4] nwname[2] nwname*wname[s] -> Rwalk: nwqid[2] nwqid*qid.
   * ".." is the node table's parent (the root's is the root). When a later name fails,
   * Rwalk carries the qids walked so far and newfid is not bound; when the first fails, Rlerror.
   */
  private walk(r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
    const { fid, newfid, names } = W.twalk(r, P.P9_MAXWELEM);
    const nwname = names.length;
    const src = this.nodeFid(fid);
    if (newfid !== fid) this.newFid(newfid);
    this.needRoom(ctx, P.P9_HEADER_SIZE + 2 + P.P9_QID_SIZE * nwname);
    if (nwname === 0 && newfid === fid) {
      // A clone onto itself changes nothing (and keeps an open fid open).
      W.rwalk(w, []);
      return P.P9_RWALK;
    }

    let cur = this.fs.ref(src.node);
    const qids: Qid[] = [];
    for (let i = 0; i < names.length; i++) {
      let next: Node;
      try {
        next = isDotDot(names[i]!) ? this.fs.parent(cur) : this.fs.lookup(cur, names[i]!);
      } catch (e) {
        this.fs.release(cur);
        if (i === 0) throw e;
        W.rwalk(w, qids);
        return P.P9_RWALK;
      }
      this.fs.release(cur);
      cur = next;
      qids.push(this.qid(cur));
    }
    const state: LiveFid = { kind: 'node', node: cur, file: null, uid: src.uid };
    if (newfid === fid) this.fids.dispose(this.fids.take(fid)!);
    this.fids.set(newfid, state);
    W.rwalk(w, qids);
    return P.P9_RWALK;
  }

  /** Tclunk: fid[4]. The fid is gone afterwards even when the reply is an error (a pending xattr write failed). */
  private clunk(r: MessageReader): number {
    const { fid } = W.tfid(r);
    const state = this.fids.take(fid);
    if (!state) this.fail(P.EBADF, `fid ${fid} is not in use`);
    try {
      if (state.kind === 'xattr-write') this.commitXattr(state);
      if (state.kind === 'stale' && state.pendingXattr) this.fail(P.ESTALE, `fid ${fid}: the xattr value being written was lost across a snapshot restore`);
    } finally {
      this.fids.dispose(state);
    }
    return P.P9_RCLUNK;
  }

  /** Tremove: fid[4]. Removes the file the fid names, and clunks the fid whatever the outcome. */
  private remove(r: MessageReader): number {
    const { fid } = W.tfid(r);
    const state = this.fids.take(fid);
    if (!state) this.fail(P.EBADF, `fid ${fid} is not in use`);
    try {
      if (state.kind === 'stale') this.fail(P.ESTALE, `fid ${fid} names a file that was not found again after a snapshot restore`);
      if (state.kind !== 'node') this.fail(P.EINVAL, 'Tremove of an xattr fid');
      this.fs.remove(state.node);
    } finally {
      this.fids.dispose(state);
    }
    return P.P9_RREMOVE;
  }

  /**
   * Sets the xattr a Txattrcreate fid assembled. The value must be complete
   * (every byte of [0, size) covered by some Twrite: EINVAL otherwise, and
   * nothing is set). A zero-length value with
   * XATTR_REPLACE is how Linux's removexattr arrives: it removes the attribute.
   */
  private commitXattr(state: Extract<LiveFid, { kind: 'xattr-write' }>): void {
    if (state.covered !== state.value.length) this.fail(P.EINVAL, `xattr value has ${state.covered} of ${state.value.length} bytes`);
    if (state.value.length === 0 && state.flags === P.P9_XATTR_REPLACE) this.fs.removexattr(state.node, state.name);
    else this.fs.setxattr(state.node, state.name, state.value, state.flags);
  }
}

/** qid.type of a node kind. */
export function qidType(kind: Node['kind']): number {
  return kind === 'dir' ? P.P9_QTDIR : kind === 'symlink' ? P.P9_QTSYMLINK : P.P9_QTFILE;
}

function isDotDot(name: Uint8Array): boolean {
  return name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
}

/** The errno an exception becomes. */
function errnoOf(e: unknown, type: number): number {
  if (e instanceof FsError) return e.errno;
  if (e instanceof WireError) return P.EINVAL;
  // Not the guest's doing (a bug, or guest memory that vanished): log it, answer EIO.
  debug('type %d: unexpected %s', type, (e as Error)?.stack ?? String(e));
  return P.EIO;
}
