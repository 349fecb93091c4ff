/**
 * Descriptor chains a device holds across a snapshot: chains it popped and
 * has not returned yet (virtio-net's receive buffers waiting for a packet,
 * vsock's spare rx buffer). Returning them at snapshot time would show the
 * driver empty buffers (Linux counts each as an rx length error) and would
 * write guest memory after the queue positions were saved; so the device's
 * state carries them, and the restored device holds them again.
 *
 * A saved chain is its head and its segments as [addr, len] pairs. Restoring
 * one never trusts the file: every segment must lie inside ONE guest memory
 * region (as SplitQueue makes them), the head inside the queue, no head
 * twice, the totals within 32 bits, and the number of chains must be exactly
 * what the restored queue shows outstanding (nextAvail - nextUsed), so the
 * device cannot return chains the driver never gave it.
 *
 * Also the two readers every device state needs besides lib/kvm/state-json.ts:
 * a boolean, and a record of counters.
 */
import { SnapshotStateError } from '../../../lib/errors.js';
import { array, intIn, object } from '../../../lib/kvm/state-json.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { SplitQueue } from './split-queue.js';
import type { DescriptorChain, Segment } from './types.js';

/** Ring indexes are free-running u16s. */
const IDX_MASK = 0xffff;
/** A chain's byte totals each fit a u32 (the used ring's len field; §2.7.5.2). */
const U32_MAX = 0xffff_ffff;

/** A held chain, JSON-able. */
export interface SavedChain {
  readonly head: number;
  readonly readable: readonly (readonly [number, number])[];
  readonly writable: readonly (readonly [number, number])[];
}

/** The JSON-able form of a chain the device holds. */
export function saveChain(chain: Pick<DescriptorChain, 'head' | 'readable' | 'writable'>): SavedChain {
  const pairs = (segs: readonly Segment[]) => segs.map((s) => [s.addr, s.len] as const);
  return { head: chain.head, readable: pairs(chain.readable), writable: pairs(chain.writable) };
}

/** Chains popped from `queue` and not returned (nextAvail - nextUsed). */
export function outstanding(queue: SplitQueue): number {
  return (queue.lastAvailIndex - queue.usedIndex) & IDX_MASK;
}

/**
 * Reads the saved chains at `field` for `queue` (null: the device is not
 * active, so there must be none). Throws SnapshotStateError naming the field
 * when the value is malformed, a segment is not guest RAM of one region, a
 * head repeats, or the count disagrees with what the queue has outstanding.
 */
export function restoreChains(field: string, value: unknown, queue: SplitQueue | null, memory: GuestMemory | null): DescriptorChain[] {
  const list = array(field, value, queue ? queue.size : 0);
  if (!queue || !memory) {
    if (list.length > 0) throw new SnapshotStateError(field, 'holds chains, but the device was not active', list.length);
    return [];
  }
  const held = outstanding(queue);
  if (list.length !== held) {
    throw new SnapshotStateError(field, `holds ${list.length} chains, but the queue has ${held} outstanding (nextAvail ${queue.lastAvailIndex}, nextUsed ${queue.usedIndex})`, list.length);
  }
  // A chain has at most 2 x size descriptors (direct, then one indirect table), each split at region borders.
  const maxSegments = 2 * queue.size * Math.max(1, memory.describe().length);
  const heads = new Set<number>();
  return list.map((v, i) => {
    const at = `${field}[${i}]`;
    const o = object(at, v);
    const head = intIn(`${at}.head`, o.head, 0, queue.size - 1);
    if (heads.has(head)) throw new SnapshotStateError(`${at}.head`, `descriptor ${head} is held twice`, head);
    heads.add(head);
    const readable = segments(`${at}.readable`, o.readable, memory, maxSegments);
    const writable = segments(`${at}.writable`, o.writable, memory, maxSegments - readable.segs.length);
    return { head, readable: readable.segs, writable: writable.segs, readableLength: readable.total, writableLength: writable.total };
  });
}

function segments(field: string, value: unknown, memory: GuestMemory, max: number): { segs: Segment[]; total: number } {
  const list = array(field, value, max);
  const segs: Segment[] = [];
  let total = 0;
  list.forEach((v, i) => {
    const at = `${field}[${i}]`;
    const pair = array(at, v, 2);
    if (pair.length !== 2) throw new SnapshotStateError(at, 'must be an [addr, len] pair', v);
    const addr = intIn(`${at}[0]`, pair[0], 0, Number.MAX_SAFE_INTEGER);
    const len = intIn(`${at}[1]`, pair[1], 1, U32_MAX);
    if (!inOneRegion(memory, addr, len)) throw new SnapshotStateError(at, `[0x${addr.toString(16)}, +${len}) is not guest RAM inside one region`, v);
    total += len;
    if (total > U32_MAX) throw new SnapshotStateError(field, `totals over ${U32_MAX} bytes`, total);
    segs.push({ addr, len });
  });
  return { segs, total };
}

function inOneRegion(memory: GuestMemory, addr: number, len: number): boolean {
  return memory.inOneRegion(addr, len);
}

/** A boolean at `field`. Throws SnapshotStateError otherwise. */
export function bool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new SnapshotStateError(field, 'must be true or false', v);
  return v;
}

/** An object at `field` with exactly the counters `keys` (non-negative safe integers; other keys ignored). */
export function counters<K extends string>(field: string, v: unknown, keys: readonly K[]): Record<K, number> {
  const o = object(field, v);
  return Object.fromEntries(keys.map((k) => [k, intIn(`${field}.${k}`, o[k], 0, Number.MAX_SAFE_INTEGER)])) as Record<K, number>;
}
