/**
 * Walks one split-virtqueue descriptor chain (virtio 1.2 §2.7.5) and turns it
 * into validated segments, or throws QueueError. Parse first, act later: the
 * walk reads each descriptor exactly once, checks everything, and returns
 * plain numbers, so a driver rewriting the table meanwhile cannot make the
 * device act on values that were not checked. Internal to the queue code.
 *
 * Bounds (rust-vmm virtio-queue rules, tightened to the spec where it is stricter):
 * - time-to-live: at most `size` descriptors of the descriptor table, then at
 *   most `n` entries of an indirect table of `n` entries, so a walk reads at
 *   most 2 * size descriptors whatever the driver wrote (no unbounded loop);
 * - an indirect table: only when VIRTIO_F_INDIRECT_DESC was negotiated, never
 *   inside another indirect table, never with NEXT set on the descriptor that
 *   points to it (so it ends the chain: §2.7.5.3.2 "zero or more normal chained
 *   descriptors followed by a single descriptor with INDIRECT"), `len` a
 *   non-zero multiple of 16 and at most 16 * queue size bytes (§2.7.5.3.1: "A
 *   driver MUST NOT create a descriptor chain longer than the Queue Size of the
 *   device"; rust-vmm allows up to 2^16 - 1 entries, we follow the spec);
 * - every buffer entirely in guest RAM; zero-length buffers are skipped (no
 *   address check, no segment) but count toward the TTL and the order rule;
 * - device-readable descriptors before device-writable ones (§2.7.4.2);
 * - readable and writable totals each fit in a u32 and their sum is at most
 *   2^32 (§2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32
 *   bytes in total").
 */
import {
  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_SIZE,
} from '../constants.js';
import type { GuestMemory, MemoryRegion } from '../../../lib/memory/guest-memory.js';
import { guestStruct, type GuestStruct } from './guest-struct.js';
import { QueueError, type DescriptorChain, type Segment } from './types.js';

/** Byte offsets inside a descriptor (§2.7.5 struct virtq_desc, little-endian). */
const DESC_ADDR_LO = 0;
const DESC_ADDR_HI = 4;
const DESC_LEN = 8;
const DESC_FLAGS = 12;
const DESC_NEXT = 14;
/** A descriptor as u32 words (GuestStruct.words): addr lo, addr hi, len, flags | next << 16. */
const DESC_WORDS = VIRTQ_DESC_SIZE / 4;

/** 2^32: the chain byte limit of §2.7.5.2. */
const CHAIN_BYTES_LIMIT = 0x1_0000_0000;
const U32_MAX = 0xffff_ffff;
/** Addresses with a high word above this are >= 2^53: never guest RAM, and not exact as JS numbers. */
const ADDR_HI_SAFE_MAX = 0x1f_ffff;

/** What a walk needs from its queue. */
export interface ChainSource {
  readonly memory: GuestMemory;
  /** The descriptor table (size * 16 bytes, already bounds-checked). */
  readonly table: GuestStruct;
  readonly size: number;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  readonly indirect: boolean;
}

/**
 * Appends [addr, addr+len) to `out` split at region borders (one segment per
 * region touched). Returns false when any byte is outside RAM (`out` may then
 * hold a partial result; the caller throws). `regions` are sorted and disjoint.
 */
export function appendSegments(regions: readonly MemoryRegion[], addr: number, len: number, out: Segment[]): boolean {
  let i = 0;
  while (i < regions.length && addr - regions[i]!.gpa >= regions[i]!.size) i++;
  if (i === regions.length || addr < regions[i]!.gpa) return false;
  let a = addr;
  let left = len;
  for (;;) {
    const r = regions[i]!;
    const end = r.gpa + r.size;
    const take = Math.min(left, end - a);
    out.push({ addr: a, len: take });
    left -= take;
    if (left === 0) return true;
    // The rest must continue in the directly adjacent region (no holes).
    i++;
    if (i === regions.length || regions[i]!.gpa !== end) return false;
    a = end;
  }
}

/** Guest-physical address from the two little-endian words of a descriptor, or -1 when it is >= 2^53. */
function descAddr(lo: number, hi: number): number {
  return hi > ADDR_HI_SAFE_MAX ? -1 : hi * 0x1_0000_0000 + lo;
}

/** Walks the chain that starts at descriptor `head` (< size). Throws QueueError (with `head` set). */
export function parseChain(src: ChainSource, head: number): DescriptorChain {
  const regions = src.memory.regions;
  const readable: Segment[] = [];
  const writable: Segment[] = [];
  let readableLength = 0;
  let writableLength = 0;
  let seenWritable = false;

  let table = src.table;
  let tableEntries = src.size;
  let ttl = src.size;
  let inIndirect = false;
  let index = head;
  const fail = (reason: string, what: string, value?: unknown): QueueError =>
    new QueueError(reason, `chain ${head}: ${what}${inIndirect ? ' (indirect table)' : ''}`, head, value);

  for (;;) {
    if (ttl === 0) throw fail('loop', `more than ${inIndirect ? tableEntries : src.size} descriptors (a loop?)`);
    ttl--;
    // Each field is read once, here, and only these copies are used below.
    let lo: number, hi: number, len: number, flags: number, next: number;
    const words = table.words;
    if (words !== null) {
      const w = index * DESC_WORDS;
      lo = words[w]!;
      hi = words[w + 1]!;
      len = words[w + 2]!;
      const flagsNext = words[w + 3]!; // flags in the low half, next in the high (little-endian)
      flags = flagsNext & 0xffff;
      next = flagsNext >>> 16;
    } else {
      const off = index * VIRTQ_DESC_SIZE;
      lo = table.u32(off + DESC_ADDR_LO);
      hi = table.u32(off + DESC_ADDR_HI);
      len = table.u32(off + DESC_LEN);
      flags = table.u16(off + DESC_FLAGS);
      next = table.u16(off + DESC_NEXT);
    }

    if (flags & VIRTQ_DESC_F_INDIRECT) {
      // §2.7.5.3.2: the WRITE flag of this descriptor is ignored; it names a table, not a buffer.
      if (inIndirect) throw fail('indirect-nested', `descriptor ${index} sets INDIRECT inside an indirect table`);
      if (!src.indirect) throw fail('indirect-not-negotiated', `descriptor ${index} sets INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated`);
      if (flags & VIRTQ_DESC_F_NEXT) throw fail('indirect-next', `descriptor ${index} sets both INDIRECT and NEXT`);
      if (len === 0 || len % VIRTQ_DESC_SIZE !== 0 || len / VIRTQ_DESC_SIZE > src.size) {
        throw fail('indirect-len', `indirect table length ${len} is not a non-zero multiple of ${VIRTQ_DESC_SIZE} of at most ${src.size} entries`, len);
      }
      const addr = descAddr(lo, hi);
      if (addr < 0 || !src.memory.isValid(addr, len)) throw fail('indirect-addr', `indirect table [0x${hex(lo, hi)}, +${len}) is outside guest RAM`, addr);
      table = guestStruct(src.memory, addr, len);
      tableEntries = len / VIRTQ_DESC_SIZE;
      ttl = tableEntries;
      inIndirect = true;
      index = 0;
      continue;
    }

    if (flags & VIRTQ_DESC_F_WRITE) seenWritable = true;
    else if (seenWritable) throw fail('order', `device-readable descriptor ${index} follows a device-writable one`);

    if (len !== 0) {
      const addr = descAddr(lo, hi);
      const write = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (addr < 0 || !appendSegments(regions, addr, len, write ? writable : readable)) {
        throw fail('buffer-addr', `descriptor ${index} buffer [0x${hex(lo, hi)}, +${len}) is outside guest RAM`, addr);
      }
      if (write) writableLength += len;
      else readableLength += len;
      // Each total fits in a u32 (the used ring's len field); both together stay within §2.7.5.2's 2^32 bytes.
      if (readableLength > U32_MAX || writableLength > U32_MAX || readableLength + writableLength > CHAIN_BYTES_LIMIT) {
        throw fail('too-long', `chain holds more than 2^32 bytes`, readableLength + writableLength);
      }
    }

    if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
    if (next >= tableEntries) throw fail('next-range', `descriptor ${index} has next = ${next}, outside the ${tableEntries}-entry table`, next);
    index = next;
  }
  return { head, readable, writable, readableLength, writableLength };
}

/** The 64-bit address of a descriptor in hex, for messages. */
function hex(lo: number, hi: number): string {
  return ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
}
