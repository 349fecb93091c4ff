/**
 * Byte access to a popped chain's segments: copy in and out, and carve
 * sub-ranges for zero-copy iovecs. Offsets and lengths are byte counts
 * relative to the start of the given segment list (e.g. `chain.readable`).
 * Offsets and lengths often come from guest data (request headers), so
 * invalid ones throw QueueError, never anything else. Any thread that owns
 * the chain may call these.
 */
import { GuestAddressError } from '../../../lib/errors.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { QueueError, type Segment } from './types.js';

/** Sum of the segments' lengths. */
export function segmentsLength(segs: readonly Segment[]): number {
  let n = 0;
  for (const s of segs) n += s.len;
  return n;
}

/** Throws QueueError('range') unless `v` is a non-negative safe integer. */
function checkCount(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new QueueError('range', `${what} ${v} is not a non-negative integer`, undefined, v);
}

/**
 * Calls `fn(seg, from, n)` for each piece of [offset, offset+length) of the segment list
 * (`from` is the offset inside `seg`), stopping at the end of the list. Returns the bytes covered.
 */
function eachPiece(segs: readonly Segment[], offset: number, length: number, fn: (seg: Segment, from: number, n: number) => void): number {
  let skip = offset;
  let left = length;
  for (let i = 0; i < segs.length && left > 0; i++) {
    const s = segs[i]!;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const n = Math.min(s.len - skip, left);
    fn(s, skip, n);
    left -= n;
    skip = 0;
  }
  return length - left;
}

/** Runs a guest-memory access, turning GuestAddressError (segments that were not validated) into QueueError. */
function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof GuestAddressError) throw new QueueError('buffer-addr', `segment outside guest RAM: ${e.message}`, undefined, e.gpa);
    throw e;
  }
}

/**
 * Copies `length` bytes starting `offset` bytes into the chain out of guest memory.
 * Throws QueueError('short') when the segments hold fewer than offset + length bytes
 * (nothing is allocated first), QueueError('range') for a negative/non-integer argument.
 */
export function readChain(memory: GuestMemory, segments: readonly Segment[], offset: number, length: number): Uint8Array {
  checkCount('offset', offset);
  checkCount('length', length);
  const total = segmentsLength(segments);
  if (offset + length > total) throw new QueueError('short', `chain holds ${total} bytes; reading ${length} at offset ${offset}`, undefined, offset + length);
  const out = new Uint8Array(length);
  readChainInto(memory, segments, offset, out);
  return out;
}

/**
 * {@link readChain} into `dst` (its length is the count): no allocation, and
 * no walk of the whole list when the bytes lie in the first segment (a
 * packet's or a request's header, usually). Same errors; `dst` is untouched
 * when it throws QueueError('short').
 */
export function readChainInto(memory: GuestMemory, segments: readonly Segment[], offset: number, dst: Uint8Array): void {
  checkCount('offset', offset);
  const length = dst.length;
  const first = segments[0];
  if (first !== undefined && offset + length <= first.len) {
    guarded(() => memory.readInto(first.addr + offset, dst));
    return;
  }
  const total = segmentsLength(segments);
  if (offset + length > total) throw new QueueError('short', `chain holds ${total} bytes; reading ${length} at offset ${offset}`, undefined, offset + length);
  let done = 0;
  guarded(() => eachPiece(segments, offset, length, (s, from, n) => {
    memory.readInto(s.addr + from, dst.subarray(done, done + n));
    done += n;
  }));
}

/**
 * Copies `data` into the chain starting `offset` bytes in, stopping at the chain's end.
 * Returns the bytes written (0 when `offset` is at or past the end). QueueError('range')
 * for a negative/non-integer offset.
 */
export function writeChain(memory: GuestMemory, segments: readonly Segment[], offset: number, data: Uint8Array): number {
  checkCount('offset', offset);
  let done = 0;
  return guarded(() => eachPiece(segments, offset, data.length, (s, from, n) => {
    memory.write(s.addr + from, data.subarray(done, done + n));
    done += n;
  }));
}

/**
 * The sub-range [offset, offset+length) of the segment list as segments (each still
 * inside one region, so `memory.hostAddress(seg.addr, seg.len)` gives an iovec).
 * Zero-length pieces are left out. Throws QueueError('short') when the list is
 * shorter than offset + length, QueueError('range') for invalid arguments.
 */
export function sliceSegments(segs: readonly Segment[], offset: number, length: number): Segment[] {
  checkCount('offset', offset);
  checkCount('length', length);
  const total = segmentsLength(segs);
  if (offset + length > total) throw new QueueError('short', `chain holds ${total} bytes; slicing ${length} at offset ${offset}`, undefined, offset + length);
  if (length === 0) return [];
  // The segment that holds byte `offset` (`skip` bytes into it): never an empty one, since offset < total.
  let first = 0;
  let skip = offset;
  while (skip >= segs[first]!.len) skip -= segs[first++]!.len;
  // The segment that holds the last byte (`end` bytes of it are in the range), noting empty ones between.
  let last = first;
  let end = skip + length;
  let empty = false;
  while (end > segs[last]!.len) {
    end -= segs[last++]!.len;
    if (segs[last]!.len === 0) empty = true;
  }
  // Whole segments are shared, not copied: a 1 MiB request is one array copy, not 256 pushes.
  const out = segs.slice(first, last + 1);
  const head = out[0]!;
  if (first === last) {
    if (skip !== 0 || length !== head.len) out[0] = { addr: head.addr + skip, len: length };
    return out;
  }
  if (skip !== 0) out[0] = { addr: head.addr + skip, len: head.len - skip };
  const tail = out[out.length - 1]!;
  if (end !== tail.len) out[out.length - 1] = { addr: tail.addr, len: end };
  return empty ? out.filter((s) => s.len > 0) : out;
}
