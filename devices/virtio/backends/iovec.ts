/**
 * struct iovec arrays that point straight into guest memory (zero copy,
 * ARCHITECTURE.md §3): each entry is the host address of a guest segment, so
 * preadv/pwritev move bytes between the file and guest RAM without passing
 * through a JS buffer.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { Segment } from '../queue/types.js';
import { IOV_MAX } from './libc.js';

/** sizeof(struct iovec) on 64-bit Linux: { void *iov_base; size_t iov_len; }. */
export const IOVEC_SIZE = 16;

/** A position inside a segment list: segment `index`, byte `offset` into it. */
export interface SegmentCursor {
  index: number;
  offset: number;
}

/** Moves `cursor` forward by `n` bytes (n must not run past the end of `segments`). */
export function advanceCursor(segments: readonly Segment[], cursor: SegmentCursor, n: number): void {
  let left = n;
  while (left > 0 && cursor.index < segments.length) {
    const room = segments[cursor.index]!.len - cursor.offset;
    if (left < room) {
      cursor.offset += left;
      return;
    }
    left -= room;
    cursor.index++;
    cursor.offset = 0;
  }
  skipEmpty(segments, cursor);
}

/** Steps over zero-length segments (and a cursor parked at a segment's end). */
export function skipEmpty(segments: readonly Segment[], cursor: SegmentCursor): void {
  while (cursor.index < segments.length && cursor.offset >= segments[cursor.index]!.len) {
    cursor.index++;
    cursor.offset = 0;
  }
}

/**
 * A reusable array of up to {@link IOV_MAX} iovecs (one per I/O thread;
 * not reentrant). Host addresses come from {@link GuestMemory.hostAddress},
 * which checks every segment against guest RAM and throws GuestAddressError
 * for memory that has no host mapping.
 */
export class IovecArray {
  /** The raw struct iovec array handed to the syscall. */
  readonly buffer = new Uint8Array(IOV_MAX * IOVEC_SIZE);
  private readonly view = new DataView(this.buffer.buffer);
  /** Entries filled by the last {@link fill}. */
  count = 0;
  /** Bytes covered by those entries. */
  bytes = 0;

  /**
   * Fills entries from `cursor` onwards (the cursor itself is not moved) until
   * the segments end or IOV_MAX entries are used. Segments that continue one
   * another in host memory share one entry (a guest buffer of consecutive
   * pages is one iovec, not one per page).
   */
  fill(memory: GuestMemory, segments: readonly Segment[], cursor: SegmentCursor): void {
    const view = this.view;
    let count = 0;
    let bytes = 0;
    let offset = cursor.offset;
    let entryEnd = -1; // host address just past the last entry
    let entryLen = 0;
    // The guest-RAM region of the last segment looked up, [rGpa, rEnd) at host address rHost: a
    // request's segments are nearly always in one region, so only the first goes through
    // hostAddressNumber (its checks and region search, calls that are dear before V8 has compiled
    // this loop). A segment inside that range is an integer range of it, so its host address is
    // rHost + (addr - rGpa), what hostAddressNumber would answer.
    let rGpa = 0;
    let rEnd = 0;
    let rHost = 0;
    for (let i = cursor.index; i < segments.length; i++, offset = 0) {
      const seg = segments[i]!;
      const len = seg.len - offset;
      if (len <= 0) continue;
      const gpa = seg.addr + offset;
      let addr: number;
      if (gpa >= rGpa && gpa + len <= rEnd && Number.isInteger(gpa) && Number.isInteger(len)) {
        addr = rHost + (gpa - rGpa);
      } else {
        addr = memory.hostAddressNumber(gpa, len);
        const r = memory.regions[memory.regionIndex(gpa)]!;
        rGpa = r.gpa;
        rEnd = r.gpa + r.size;
        rHost = addr - (gpa - r.gpa);
      }
      if (addr === entryEnd) {
        entryLen += len;
        setU64(view, (count - 1) * IOVEC_SIZE + 8, entryLen);
      } else {
        if (count === IOV_MAX) break;
        const at = count * IOVEC_SIZE;
        setU64(view, at, addr);
        setU64(view, at + 8, len);
        entryLen = len;
        count++;
      }
      entryEnd = addr + len;
      bytes += len;
    }
    this.count = count;
    this.bytes = bytes;
  }
}

/** Decodes `count` iovecs from a raw struct iovec array (test doubles read what the syscall got). */
export function decodeIovecs(iov: Uint8Array, count: number): { base: bigint; len: number }[] {
  const view = new DataView(iov.buffer, iov.byteOffset, iov.byteLength);
  const out: { base: bigint; len: number }[] = [];
  for (let i = 0; i < count; i++) {
    out.push({ base: view.getBigUint64(i * IOVEC_SIZE, true), len: Number(view.getBigUint64(i * IOVEC_SIZE + 8, true)) });
  }
  return out;
}

/**
 * The iovecs of guest buffers that a device holds in order and fills from the
 * front (virtio-net's receive buffers): entries are added as the driver gives
 * buffers and dropped from the front as packets fill them. So each segment's
 * host address is looked up once, when it is added, not again at every read:
 * a receive over 43 held 1.5 KiB buffers (what Linux posts for small packets)
 * builds no iovecs at all. One entry per segment (none merged), so entry k
 * is segment k of the segments added and not yet dropped. One thread only.
 */
export class IovecQueue {
  private buffer: Uint8Array;
  private view: DataView;
  /** Index of the first live entry in `buffer`. */
  private first = 0;
  private live = 0;
  /** Where {@link withExtra} copies a prefix that is not the whole queue (the extra entry would overwrite a live one). */
  private scratch: Uint8Array = new Uint8Array(0);
  private scratchView = new DataView(this.scratch.buffer);

  /** @param capacity entries to start with (the queue grows when it must) */
  constructor(capacity = IOV_MAX) {
    this.buffer = new Uint8Array(Math.max(capacity, 2) * IOVEC_SIZE);
    this.view = new DataView(this.buffer.buffer);
  }

  /** Live entries. */
  get length(): number {
    return this.live;
  }

  /**
   * Adds one entry per segment, in order. Throws GuestAddressError (and adds
   * nothing) when a segment is not in one host-mapped region of `memory`.
   */
  push(memory: GuestMemory, segments: readonly Segment[]): void {
    const addrs = segments.map((s) => memory.hostAddressNumber(s.addr, s.len));
    this.reserve(segments.length + 1);
    let at = (this.first + this.live) * IOVEC_SIZE;
    for (let i = 0; i < segments.length; i++, at += IOVEC_SIZE) {
      setU64(this.view, at, addrs[i]!);
      setU64(this.view, at + 8, segments[i]!.len);
    }
    this.live += segments.length;
  }

  /** Drops the first `n` entries (at most all of them). */
  shift(n: number): void {
    const k = Math.min(n, this.live);
    this.first += k;
    this.live -= k;
    if (this.live === 0) this.first = 0;
  }

  clear(): void {
    this.first = 0;
    this.live = 0;
  }

  /**
   * A raw struct iovec array: the first `n` live entries (n <= length), then
   * one more for [`addr`, `addr`+`len`) of host memory. Valid until the next
   * call on this queue.
   */
  withExtra(n: number, addr: number, len: number): Uint8Array {
    if (!Number.isInteger(n) || n < 0 || n > this.live) throw new RangeError(`${n} of ${this.live} iovecs`);
    const bytes = (n + 1) * IOVEC_SIZE;
    if (n === this.live) {
      // The slot after the last live entry is free (reserve() keeps one).
      const at = (this.first + n) * IOVEC_SIZE;
      setU64(this.view, at, addr);
      setU64(this.view, at + 8, len);
      return this.buffer.subarray(this.first * IOVEC_SIZE, this.first * IOVEC_SIZE + bytes);
    }
    if (this.scratch.length < bytes) {
      this.scratch = new Uint8Array(Math.max(bytes, 4096));
      this.scratchView = new DataView(this.scratch.buffer);
    }
    this.scratch.set(this.buffer.subarray(this.first * IOVEC_SIZE, (this.first + n) * IOVEC_SIZE));
    setU64(this.scratchView, n * IOVEC_SIZE, addr);
    setU64(this.scratchView, n * IOVEC_SIZE + 8, len);
    return this.scratch.subarray(0, bytes);
  }

  /** Makes room for `extra` more entries after the live ones: moves them to the front, or grows. */
  private reserve(extra: number): void {
    const capacity = this.buffer.length / IOVEC_SIZE;
    if (this.first + this.live + extra <= capacity) return;
    const live = this.buffer.subarray(this.first * IOVEC_SIZE, (this.first + this.live) * IOVEC_SIZE);
    if (this.live + extra <= capacity) {
      this.buffer.copyWithin(0, this.first * IOVEC_SIZE, (this.first + this.live) * IOVEC_SIZE);
    } else {
      const grown = new Uint8Array(Math.max(2 * capacity, this.live + extra) * IOVEC_SIZE);
      grown.set(live);
      this.buffer = grown;
      this.view = new DataView(grown.buffer);
    }
    this.first = 0;
  }
}

/** Stores a u64 (a Number below 2^53) without a BigInt: low then high 32 bits. */
function setU64(view: DataView, at: number, v: number): void {
  // `>>> 0` is the low 32 bits of an integer below 2^53 (ToUint32 is modulo 2^32); `%` on a number
  // that is not a small integer is a floating-point remainder, a C call in V8 and slower per iovec.
  view.setUint32(at, v >>> 0, true);
  view.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
}
