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
    let count = 0;
    let bytes = 0;
    let offset = cursor.offset;
    let entryEnd = -1; // host address just past the last entry
    let entryLen = 0;
    for (let i = cursor.index; i < segments.length; i++, offset = 0) {
      const seg = segments[i]!;
      const len = seg.len - offset;
      if (len <= 0) continue;
      const addr = memory.hostAddressNumber(seg.addr + offset, len);
      if (addr === entryEnd) {
        entryLen += len;
        this.setU64((count - 1) * IOVEC_SIZE + 8, entryLen);
      } else {
        if (count === IOV_MAX) break;
        const at = count * IOVEC_SIZE;
        this.setU64(at, addr);
        this.setU64(at + 8, len);
        entryLen = len;
        count++;
      }
      entryEnd = addr + len;
      bytes += len;
    }
    this.count = count;
    this.bytes = bytes;
  }

  /** Stores a u64 (a Number below 2^53) without a BigInt. */
  private setU64(at: number, v: number): void {
    // `>>> 0` is the low 32 bits of an integer below 2^53 (ToUint32 is modulo 2^32); `%` on a number
    // that is not a small integer is a floating-point remainder, a C call in V8 and slower per iovec.
    this.view.setUint32(at, v >>> 0, true);
    this.view.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
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
