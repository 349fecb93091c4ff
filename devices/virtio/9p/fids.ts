/**
 * The fid table of one 9P session: what each fid number the guest chose
 * stands for. Bounded (P9_MAX_FIDS): a guest cannot grow it without limit.
 *
 * A fid is one of:
 * - `node`: a file or directory (a backend node reference), possibly opened
 *   (Tlopen / Tlcreate) for I/O;
 * - `xattr-read`: the value (or name list) a Txattrwalk fetched, read with Tread;
 * - `xattr-write`: a value being assembled by Twrite after Txattrcreate, set on Tclunk;
 *   `covered` counts the bytes [0, covered) written so far (writes may overlap
 *   what is covered, never leave a gap after it);
 * - `stale`: a fid restored from a snapshot whose file could not be found
 *   again (snapshot.ts): every message on it answers ESTALE; Tclunk works
 *   (and answers ESTALE for a Txattrcreate whose value was lost: `pendingXattr`).
 */
import type { HostDir, Node, OpenFile } from '../backends/hostdir/index.js';
import { P9_LOCK_TYPE_UNLCK, P9_MAX_FIDS, P9_MAX_LOCK_RANGES, P9_MAX_XATTR_BYTES } from './constants.js';

/** The uid a fid acts for (Tattach's n_uname), or null when the attach gave none. */
export type FidUid = number | null;

export type Fid =
  | { kind: 'node'; node: Node; file: OpenFile | null; uid: FidUid }
  | { kind: 'xattr-read'; data: Uint8Array; uid: FidUid }
  | { kind: 'xattr-write'; node: Node; name: Uint8Array; flags: number; value: Uint8Array; covered: number; uid: FidUid }
  | { kind: 'stale'; uid: FidUid; pendingXattr: boolean };

/** A fid that is not stale: what every message but Tclunk needs. */
export type LiveFid = Exclude<Fid, { kind: 'stale' }>;

/** A byte range an open file holds a lock on: [start, end), end null = to the end of the file. */
export interface HeldLock {
  readonly start: bigint;
  readonly end: bigint | null;
  readonly type: number;
}

export class FidTable {
  private readonly fids = new Map<number, Fid>();
  private heldXattrBytes = 0;
  /** The lock ranges each open file holds, as the Tlocks that succeeded left them (see planLock). */
  private readonly locks = new Map<OpenFile, readonly HeldLock[]>();
  private heldLockRanges = 0;

  /**
   * @param maxXattrBytes most bytes of xattr data the fids may hold together (see xattrFits).
   * @param maxLockRanges most lock ranges their open files may hold together (see planLock).
   */
  constructor(
    private readonly fs: HostDir, readonly max = P9_MAX_FIDS, readonly maxXattrBytes = P9_MAX_XATTR_BYTES,
    readonly maxLockRanges = P9_MAX_LOCK_RANGES,
  ) {}

  get size(): number {
    return this.fids.size;
  }

  /** Bytes of xattr data (read results and values being written) the fids hold now. */
  get xattrBytes(): number {
    return this.heldXattrBytes;
  }

  /** Lock ranges the session's open files hold now. */
  get lockRanges(): number {
    return this.heldLockRanges;
  }

  /**
   * The ranges `file` would hold after a Tlock of `type` over [start, start + length) (length 0: to the end of
   * the file), or null when that would take the session past maxLockRanges. The model never merges adjacent
   * ranges, which the host kernel does, so it counts at least as many records as the kernel holds.
   */
  planLock(file: OpenFile, type: number, start: bigint, length: bigint): readonly HeldLock[] | null {
    const end = length === 0n ? null : start + length;
    const held = this.locks.get(file) ?? [];
    const next: HeldLock[] = [];
    for (const r of held) {
      const overlaps = (end === null || r.start < end) && (r.end === null || start < r.end);
      if (!overlaps) {
        next.push(r);
        continue;
      }
      // The parts of r outside the new range stay as they were.
      if (r.start < start) next.push({ start: r.start, end: start, type: r.type });
      if (end !== null && (r.end === null || end < r.end)) next.push({ start: end, end: r.end, type: r.type });
    }
    if (type !== P9_LOCK_TYPE_UNLCK) next.push({ start, end, type });
    return this.heldLockRanges - held.length + next.length <= this.maxLockRanges ? next : null;
  }

  /** Records what planLock returned, once the host took the lock. */
  commitLock(file: OpenFile, ranges: readonly HeldLock[]): void {
    this.heldLockRanges += ranges.length - (this.locks.get(file)?.length ?? 0);
    if (ranges.length) this.locks.set(file, ranges);
    else this.locks.delete(file);
  }

  /** True when `bytes` more of xattr data stay within maxXattrBytes. */
  xattrFits(bytes: number): boolean {
    return this.heldXattrBytes + bytes <= this.maxXattrBytes;
  }

  get(fid: number): Fid | undefined {
    return this.fids.get(fid);
  }

  has(fid: number): boolean {
    return this.fids.has(fid);
  }

  /** True when one more fid fits. */
  get full(): boolean {
    return this.fids.size >= this.max;
  }

  /** Binds `fid` (the caller checked it is free and the table not full), taking over the state's references. */
  set(fid: number, state: Fid): void {
    const old = this.fids.get(fid);
    if (old) this.heldXattrBytes -= xattrBytesOf(old);
    this.fids.set(fid, state);
    this.heldXattrBytes += xattrBytesOf(state);
  }

  /** Every bound fid and its state, in binding order (snapshot.ts). */
  entries(): IterableIterator<[number, Fid]> {
    return this.fids.entries();
  }

  /** Unbinds `fid` and returns its state (the caller now owns its references). */
  take(fid: number): Fid | undefined {
    const s = this.fids.get(fid);
    if (s) {
      this.fids.delete(fid);
      this.heldXattrBytes -= xattrBytesOf(s);
    }
    return s;
  }

  /** Gives back a state's host resources (open file, node reference). */
  dispose(state: Fid): void {
    if (state.kind === 'node') {
      if (state.file) {
        // Closing the file drops its locks in the host.
        this.heldLockRanges -= this.locks.get(state.file)?.length ?? 0;
        this.locks.delete(state.file);
        this.fs.close(state.file);
      }
      this.fs.release(state.node);
    } else if (state.kind === 'xattr-write') {
      this.fs.release(state.node);
    }
  }

  /** Clunks every fid without side effects (pending xattr writes are dropped): Tversion and device reset. */
  clear(): void {
    for (const s of this.fids.values()) this.dispose(s);
    this.fids.clear();
    this.heldXattrBytes = 0;
    this.locks.clear();
    this.heldLockRanges = 0;
  }
}

/** The xattr bytes a fid state holds. */
function xattrBytesOf(s: Fid): number {
  return s.kind === 'xattr-read' ? s.data.length : s.kind === 'xattr-write' ? s.value.length : 0;
}
