/**
 * The FUSE server behind virtio-fs: one request chain = fuse_in_header + op
 * args in the readable part, fuse_out_header + payload written into the
 * writable part (linux/fuse.h, protocol 7.31). Host access goes through the
 * sandboxed HostDir backend only (openat2 RESOLVE_BENEATH, fd-relative).
 *
 * This file frames requests and replies and keeps the session's tables
 * (nodeids, file handles); wire.ts decodes and encodes every FUSE struct;
 * ops.ts has one small function per opcode, found through its OPS table.
 *
 * Guest data is hostile: every length is checked against the chain and the
 * header, every name must be NUL-terminated inside the message and a single
 * path component (the backend checks again), nodeids and fhs are looked up in
 * our tables (unknown: ESTALE / EBADF). Nothing guest-driven throws out of
 * serve(): backend failures become -errno replies.
 *
 * I/O worker thread only.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { FsError, type HostDir, type Node, type OpenFile, type Stat } from '../backends/hostdir/index.js';
import { readChainInto, writeChain } from '../queue/chain-io.js';
import type { DescriptorChain } from '../queue/types.js';
import * as F from './constants.js';
import { OPS, type FuseRequest } from './ops.js';
import { ArgReader, err, FuseError, readInHeader, ReplyBuf, writeEntry, writeOutHeader } from './wire.js';

/** A nodeid the kernel holds: the backend node and how many lookups the kernel has not forgotten. */
export interface Inode {
  readonly nodeid: bigint;
  readonly node: Node;
  /** Lookups the kernel holds (FORGET gives them back). */
  nlookup: bigint;
}

export interface FuseServerStats {
  requests: number;
  errors: number;
  malformed: number;
  dropped: number;
}

export class FuseServer {
  readonly stats: FuseServerStats = { requests: 0, errors: 0, malformed: 0, dropped: 0 };
  private readonly inodes = new Map<bigint, Inode>();
  private readonly byNode = new Map<Node, Inode>();
  private readonly handles = new Map<bigint, OpenFile>();
  /** Nodeids restored from a snapshot whose file was not found again, and the lookups the kernel still holds: ESTALE on use, FORGET works. */
  private readonly staleInodes = new Map<bigint, bigint>();
  /** Handles restored from a snapshot whose file was not found again: ESTALE on use, RELEASE works. */
  private readonly staleHandles = new Set<bigint>();
  private nextNodeid = 2n;
  private nextFh = 1n;
  /** FUSE_INIT was answered: other requests are served (ops.ts sets it). */
  initialized = false;
  /** The reply being built (ops.ts writes into it); its first OUT_HEADER_SIZE bytes are the out header. */
  readonly reply = new ReplyBuf(F.MAX_WRITE + 4096);
  /** Each request's in header and argument bytes are copied here, not into buffers of their own (see ArgReader). */
  private readonly header = new Uint8Array(F.IN_HEADER_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly args = new ArgReader(F.MAX_ARGS);

  /** Regular files are opened with FOPEN_DIRECT_IO (the share's `cache: 'never'`): the guest keeps no page cache of them. */
  readonly directIo: boolean;

  constructor(readonly fs: HostDir, readonly maxHandles = F.MAX_HANDLES, opts: { directIo?: boolean } = {}) {
    this.directIo = opts.directIo ?? false;
    this.resetTables();
  }

  /** Live inodes the kernel holds (root included). */
  get inodeCount(): number { return this.inodes.size; }
  get handleCount(): number { return this.handles.size; }
  /** Stale nodeids and handles (restored from a snapshot, their file gone). */
  get staleCount(): { inodes: number; handles: number } { return { inodes: this.staleInodes.size, handles: this.staleHandles.size }; }
  /** The kernel's lookup count of `nodeid` (tests). */
  lookupCount(nodeid: bigint): bigint | undefined { return this.inodes.get(nodeid)?.nlookup; }

  /** Forgets every nodeid and closes every handle: a new session (FUSE_INIT again, FUSE_DESTROY, device reset). */
  resetTables(): void {
    for (const f of this.handles.values()) this.fs.close(f);
    this.handles.clear();
    this.staleHandles.clear();
    this.staleInodes.clear();
    for (const ino of this.inodes.values()) if (ino.nodeid !== 1n) this.fs.release(ino.node);
    this.inodes.clear();
    this.byNode.clear();
    const root: Inode = { nodeid: 1n, node: this.fs.root, nlookup: 1n };
    this.inodes.set(1n, root);
    this.byNode.set(this.fs.root, root);
    this.initialized = false;
  }

  /** Drops the session: every handle closed, every inode forgotten. */
  reset(): void { this.resetTables(); }

  dispose(): void {
    this.resetTables();
    this.fs.dispose();
  }

  /**
   * Serves one chain; returns the used length (0: no reply, e.g. FORGET or a
   * chain with no room for an out header). Never throws for guest data.
   * An op returns the reply length in `reply` (out header included), or
   * -(n + 1) when it read n bytes straight into the chain after the out
   * header (zero-copy READ), or 0 for no reply (FORGET).
   */
  serve(memory: GuestMemory, chain: DescriptorChain): number {
    this.stats.requests++;
    if (chain.readableLength < F.IN_HEADER_SIZE) {
      this.stats.dropped++;
      return 0;
    }
    try {
      readChainInto(memory, chain.readable, 0, this.header);
    } catch {
      this.stats.dropped++;
      return 0;
    }
    const head = readInHeader(this.headerView);
    const { len, opcode, unique } = head;
    const noReply = opcode === F.FUSE_FORGET || opcode === F.FUSE_BATCH_FORGET;
    const r = this.reply;
    r.reset();
    let errno = 0;
    let payloadLen = 0;
    try {
      if (len < F.IN_HEADER_SIZE || len > chain.readableLength) {
        this.stats.malformed++;
        err(F.EINVAL, 'in header length');
      }
      const isWrite = opcode === F.FUSE_WRITE;
      const argLen = isWrite ? Math.min(len - F.IN_HEADER_SIZE, F.WRITE_IN_SIZE) : len - F.IN_HEADER_SIZE;
      if (argLen > F.MAX_ARGS) err(F.EINVAL, 'request too large');
      readChainInto(memory, chain.readable, F.IN_HEADER_SIZE, this.args.buf.subarray(0, argLen));
      const args = this.args.reset(argLen);
      if (!this.initialized && opcode !== F.FUSE_INIT && !noReply) err(F.EIO, 'not initialized');
      const op = OPS.get(opcode);
      if (!op) err(F.ENOSYS, `opcode ${opcode}`);
      const req: FuseRequest = { head, args, memory, chain };
      payloadLen = op!(this, req);
    } catch (e) {
      errno = e instanceof FuseError ? e.errno : e instanceof FsError ? e.errno : F.EIO;
      if (!(e instanceof FuseError) && !(e instanceof FsError)) this.stats.malformed++;
      if (errno <= 0 || errno > 4095) errno = F.EIO;
      this.stats.errors++;
    }
    if (noReply) return 0;
    if (chain.writableLength < F.OUT_HEADER_SIZE) {
      this.stats.dropped++;
      return 0;
    }
    let total: number;
    if (errno !== 0) total = F.OUT_HEADER_SIZE;
    else if (payloadLen >= 0) total = r.len;
    else total = F.OUT_HEADER_SIZE - payloadLen - 1; // zero-copy READ: -(n+1) bytes already in the chain
    if (errno === 0 && total > chain.writableLength) {
      errno = F.ERANGE;
      total = F.OUT_HEADER_SIZE;
    }
    writeOutHeader(r, total, errno, unique);
    try {
      writeChain(memory, chain.writable, 0, r.buf.subarray(0, payloadLen >= 0 || errno !== 0 ? total : F.OUT_HEADER_SIZE));
    } catch {
      this.stats.dropped++;
      return 0;
    }
    return total;
  }

  // ---- tables (used by ops.ts) ----

  /** The inode of `nodeid`; ESTALE when the kernel holds no such nodeid (or its file vanished across a snapshot restore). */
  inode(nodeid: bigint): Inode {
    const i = this.inodes.get(nodeid);
    if (!i) err(F.ESTALE, `nodeid ${nodeid}`);
    return i!;
  }

  /** The open file of `fh`; EBADF when unknown or closed, ESTALE when its file vanished across a snapshot restore. */
  handle(fh: bigint): OpenFile {
    if (this.staleHandles.has(fh)) err(F.ESTALE, `fh ${fh} was not found again after a snapshot restore`);
    const f = this.handles.get(fh);
    if (!f || f.closed) err(F.EBADF, `fh ${fh}`);
    return f!;
  }

  /** Registers one kernel lookup of `node` (which carries one backend reference that we take over). */
  remember(node: Node): Inode {
    const known = this.byNode.get(node);
    if (known) {
      known.nlookup++;
      this.fs.release(node); // the table already holds one backend reference for this inode
      return known;
    }
    const ino: Inode = { nodeid: this.nextNodeid++, node, nlookup: 1n };
    this.inodes.set(ino.nodeid, ino);
    this.byNode.set(node, ino);
    return ino;
  }

  /** Gives back `n` kernel lookups of `nodeid`; at zero the nodeid is gone and its backend reference released. Unknown nodeids and the root are ignored. */
  forget(nodeid: bigint, n: bigint): void {
    const stale = this.staleInodes.get(nodeid);
    if (stale !== undefined) {
      if (n >= stale) this.staleInodes.delete(nodeid);
      else this.staleInodes.set(nodeid, stale - n);
      return;
    }
    const ino = this.inodes.get(nodeid);
    if (!ino || nodeid === 1n) return;
    ino.nlookup = n >= ino.nlookup ? 0n : ino.nlookup - n;
    if (ino.nlookup === 0n) {
      this.inodes.delete(nodeid);
      this.byNode.delete(ino.node);
      this.fs.release(ino.node);
    }
  }

  /** Registers an open file and returns its fh; EMFILE (and the file closed) past maxHandles. */
  addHandle(file: OpenFile): bigint {
    if (this.openHandles >= this.maxHandles) {
      this.fs.close(file);
      err(F.EMFILE, 'too many open handles');
    }
    const fh = this.nextFh++;
    this.handles.set(fh, file);
    return fh;
  }

  /** EROFS when the share is read-only: called by every op that would change it. */
  readOnly(): void {
    if (this.fs.readOnly) err(F.EROFS);
  }

  /** Closes and forgets handle `fh` (EBADF when unknown). */
  closeHandle(fh: bigint): void {
    if (this.staleHandles.delete(fh)) return;
    const file = this.handle(fh);
    this.handles.delete(fh);
    this.fs.close(file);
  }

  /** The open handle of `fh` if it is live, for FATTR_FH (no error when it is not). */
  liveHandle(fh: bigint): OpenFile | undefined {
    const f = this.handles.get(fh);
    return f && !f.closed ? f : undefined;
  }

  /** Open handles now (for EMFILE before a create). */
  get openHandles(): number {
    return this.handles.size + this.staleHandles.size;
  }

  // ---- snapshot (snapshot.ts) ----

  /** The tables as they stand, for saving: live inodes (root included), stale nodeids, handles, the next numbers. */
  tables(): { inodes: Iterable<Inode>; staleInodes: Iterable<[bigint, bigint]>; handles: Iterable<[bigint, OpenFile]>; staleHandles: Iterable<bigint>; nextNodeid: bigint; nextFh: bigint } {
    return { inodes: this.inodes.values(), staleInodes: this.staleInodes.entries(), handles: this.handles.entries(), staleHandles: this.staleHandles.values(), nextNodeid: this.nextNodeid, nextFh: this.nextFh };
  }

  /** Starts a restored session: empty tables, the saved next numbers. */
  beginRestore(initialized: boolean, nextNodeid: bigint, nextFh: bigint): void {
    this.resetTables();
    this.initialized = initialized;
    this.nextNodeid = nextNodeid;
    this.nextFh = nextFh;
  }

  /**
   * Binds a restored `nodeid` (the caller checked it is free and below nextNodeid) to `node`
   * (one backend reference, taken over), or marks it stale when `node` is null or already
   * bound to another nodeid (then the reference is released). Returns false when stale.
   */
  restoreInode(nodeid: bigint, node: Node | null, nlookup: bigint): boolean {
    if (node && this.byNode.has(node)) {
      this.fs.release(node);
      node = null;
    }
    if (!node) {
      this.staleInodes.set(nodeid, nlookup);
      return false;
    }
    const ino: Inode = { nodeid, node, nlookup };
    this.inodes.set(nodeid, ino);
    this.byNode.set(node, ino);
    return true;
  }

  /** Binds a restored handle `fh` to `file` (taken over), or marks it stale when null. */
  restoreHandle(fh: bigint, file: OpenFile | null): void {
    if (file) this.handles.set(fh, file);
    else this.staleHandles.add(fh);
  }

  /** Replies fuse_entry_out for a node just obtained (one backend reference, which the table takes over or releases). */
  entryFor(node: Node): number {
    const st = this.statNew(node);
    writeEntry(this.reply, this.remember(node).nodeid, st);
    return this.reply.len;
  }

  /** Stats a node just obtained (one backend reference); when that fails, the reference is released and the error thrown. */
  statNew(node: Node): Stat {
    try {
      return this.fs.stat(node);
    } catch (e) {
      this.fs.release(node);
      throw e;
    }
  }
}
