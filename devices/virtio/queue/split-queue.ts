/**
 * Device side of a split virtqueue (virtio 1.2 §2.7).
 *
 * One SplitQueue belongs to one thread (the I/O worker); the driver is the
 * other party, running concurrently in the guest. Everything the guest wrote
 * is treated as hostile: every index is range-checked, every chain walk is
 * bounded (see descriptor-chain.ts), and guest mistakes surface only as
 * {@link QueueError}.
 *
 * Ring layout (§2.7.6, §2.7.8), little-endian:
 *   avail: flags u16 | idx u16 | ring[size] u16 | used_event u16
 *   used:  flags u16 | idx u16 | ring[size] {id u32, len u32} | avail_event u16
 */
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_SIZE, VIRTQ_MAX_SIZE, VIRTQ_USED_F_NO_NOTIFY,
} from '../constants.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { parseChain, type ChainSource } from './descriptor-chain.js';
import { guestStruct, U16Cell, type GuestStruct } from './guest-struct.js';
import { QueueError, type DescriptorChain, type QueueConfig, type QueuePosition } from './types.js';

/** Offsets in the available and used rings (§2.7.6, §2.7.8). */
const RING_FLAGS = 0;
const RING_IDX = 2;
const RING_ENTRIES = 4;
const AVAIL_ENTRY_SIZE = 2;
const USED_ELEM_SIZE = 8;
const USED_ELEM_ID = 0;
const USED_ELEM_LEN = 4;
/** Alignment of each part (§2.7 table "Virtqueue Part Alignment"). */
const DESC_TABLE_ALIGN = 16;
const AVAIL_RING_ALIGN = 2;
const USED_RING_ALIGN = 4;
/** Ring indices are free-running u16 counters. */
const IDX_MASK = 0xffff;
const IDX_MODULUS = 0x1_0000;

/** Bytes of each part for a queue of `size`, including the EVENT_IDX trailer (present in memory either way). */
export function splitQueueLayout(size: number): { desc: number; avail: number; used: number } {
  return {
    desc: VIRTQ_DESC_SIZE * size,
    avail: RING_ENTRIES + AVAIL_ENTRY_SIZE * size + 2,
    used: RING_ENTRIES + USED_ELEM_SIZE * size + 2,
  };
}

/**
 * The device's view of one split virtqueue: pop() validated chains, pushUsed() results, and decide
 * on interrupts and kicks. Single-threaded: only the thread that owns the queue (the I/O worker)
 * calls it. Guest misbehaviour throws QueueError; caller bugs throw RangeError.
 */
export class SplitQueue {
  readonly size: number;
  private readonly chains: ChainSource;
  private readonly availRing: GuestStruct;
  private readonly usedRing: GuestStruct;
  private readonly availFlags: U16Cell;
  private readonly availIdx: U16Cell;
  private readonly usedEvent: U16Cell;
  private readonly usedFlags: U16Cell;
  private readonly usedIdx: U16Cell;
  private readonly availEvent: U16Cell;

  /** Next avail ring slot the device will read (free-running u16). */
  private nextAvail = 0;
  /** Next used ring slot the device will write (free-running u16); used.idx holds this value. */
  private nextUsed = 0;
  /** nextUsed when needsInterrupt() last ran, and how many were pushed since. */
  private signalledUsed = 0;
  private pushedSinceSignal = 0;
  /** The device-owned used.flags, kept here so we never read back guest memory for it. */
  private usedFlagsValue = 0;

  /**
   * Validates the ring addresses (alignment, size, inside guest RAM). Throws QueueError
   * (reason `size`, `address` or `alignment`). Writes nothing to guest memory: the
   * device starts at avail/used index 0, as after the driver zeroed the rings (§2.7),
   * or, for a queue restored from a snapshot, at `config.start`, which must agree
   * with the rings in memory (reason `restore`): used.idx equals its nextUsed, and
   * the chains the device holds (nextAvail - nextUsed) plus those the driver
   * published after nextAvail are at most a queue's worth.
   */
  constructor(readonly memory: GuestMemory, readonly config: QueueConfig) {
    const { size, descAddr, availAddr, usedAddr } = config;
    if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) {
      throw new QueueError('size', `queue size ${size} is not a power of 2 in 1..${VIRTQ_MAX_SIZE}`, undefined, size);
    }
    this.size = size;
    const layout = splitQueueLayout(size);
    checkPart(memory, 'descriptor table', descAddr, layout.desc, DESC_TABLE_ALIGN);
    checkPart(memory, 'available ring', availAddr, layout.avail, AVAIL_RING_ALIGN);
    checkPart(memory, 'used ring', usedAddr, layout.used, USED_RING_ALIGN);

    this.chains = { memory, table: guestStruct(memory, descAddr, layout.desc), size, indirect: config.indirect };
    this.availRing = guestStruct(memory, availAddr + RING_ENTRIES, AVAIL_ENTRY_SIZE * size);
    this.usedRing = guestStruct(memory, usedAddr + RING_ENTRIES, USED_ELEM_SIZE * size);
    this.availFlags = new U16Cell(memory, availAddr + RING_FLAGS);
    this.availIdx = new U16Cell(memory, availAddr + RING_IDX);
    this.usedEvent = new U16Cell(memory, availAddr + RING_ENTRIES + AVAIL_ENTRY_SIZE * size);
    this.usedFlags = new U16Cell(memory, usedAddr + RING_FLAGS);
    this.usedIdx = new U16Cell(memory, usedAddr + RING_IDX);
    this.availEvent = new U16Cell(memory, usedAddr + RING_ENTRIES + USED_ELEM_SIZE * size);
    if (config.start) this.startAt(config.start);
  }

  private startAt(start: QueuePosition): void {
    const { nextAvail, nextUsed } = start;
    for (const [name, v] of [['nextAvail', nextAvail], ['nextUsed', nextUsed]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > IDX_MASK) throw new QueueError('restore', `${name} ${v} is not a ring index (0..${IDX_MASK})`, undefined, v);
    }
    const usedIdx = this.usedIdx.load();
    if (usedIdx !== nextUsed) throw new QueueError('restore', `nextUsed ${nextUsed} disagrees with used.idx ${usedIdx} in guest memory`, undefined, nextUsed);
    // Chains between nextUsed and nextAvail are held by the device (its state carries them, queue/saved-chain.ts);
    // those and the ones the driver published since cannot be more than the ring has entries.
    const held = (nextAvail - nextUsed) & IDX_MASK;
    const pending = (this.availIdx.load() - nextAvail) & IDX_MASK;
    if (held + pending > this.size) throw new QueueError('restore', `avail.idx is ${pending} entries ahead of nextAvail ${nextAvail}, which is ${held} ahead of nextUsed ${nextUsed}; queue size is ${this.size}`, undefined, nextAvail);
    this.nextAvail = nextAvail;
    this.nextUsed = nextUsed;
    this.signalledUsed = nextUsed;
  }

  /**
   * Where the device is in the rings, for a snapshot: give it back as
   * `QueueConfig.start` to continue there. used.flags (NO_NOTIFY) is not kept:
   * a restored queue polls once, and its drain sets the flag again as needed.
   */
  saveState(): QueuePosition {
    return { nextAvail: this.nextAvail, nextUsed: this.nextUsed };
  }

  /** The next avail ring position the device will consume (free-running u16; diagnostics and tests). */
  get lastAvailIndex(): number {
    return this.nextAvail;
  }

  /** The used index the device last published (free-running u16). */
  get usedIndex(): number {
    return this.nextUsed;
  }

  /**
   * Takes the next available chain, or null when the ring is empty. Throws
   * QueueError when the driver's avail index or the chain is malformed (the
   * head is then consumed; the caller decides between failing the request and
   * DEVICE_NEEDS_RESET).
   *
   * A bad avail.idx (`avail-idx`), or more chains out than the queue has
   * entries (`held`), consumes nothing and will be reported again;
   * a head outside the table (`head-range`) is consumed without `error.head`;
   * any other chain error is consumed and carries `error.head` so the device
   * can return it with pushUsed(head, 0). Reads at most 2 * size descriptors.
   */
  pop(): DescriptorChain | null {
    // §2.7.13.3 (device side of "publish the index after the ring entry"): the acquire load of
    // avail.idx happens-before the reads of the ring slot and the descriptors below.
    const availIdx = this.availIdx.load();
    const pending = (availIdx - this.nextAvail) & IDX_MASK;
    if (pending === 0) return null;
    if (pending > this.size) {
      throw new QueueError('avail-idx', `avail.idx ${availIdx} is ${pending} entries ahead of the device (${this.nextAvail}); queue size is ${this.size}`, undefined, availIdx);
    }
    // The driver has `size` descriptors, so it can have at most `size` chains out at once. With that many
    // popped and not yet pushed back, another available entry names a head the device still holds. The
    // devices that hold chains bound them themselves (net RX stops popping at a queue's worth); this makes
    // it a property of the queue, so a device that answers later cannot take the same buffer twice.
    const held = (this.nextAvail - this.nextUsed) & IDX_MASK;
    if (held >= this.size) {
      throw new QueueError('held', `the device holds ${held} chains, a full ${this.size}-entry queue, and the driver made ${pending} more available: it published heads it has not got back`, undefined, availIdx);
    }
    const head = this.availRing.u16((this.nextAvail & (this.size - 1)) * AVAIL_ENTRY_SIZE);
    this.nextAvail = (this.nextAvail + 1) & IDX_MASK;
    // With EVENT_IDX, keep avail_event at the next entry we will read (as QEMU does): the driver then
    // kicks exactly when it publishes an entry after the device caught up, so a device that simply pops
    // until null never sleeps on a buffer it was not told about. The seq-cst store is ordered before the
    // avail.idx load of the next pop(), which pairs with the driver's "write idx; mb; read avail_event".
    if (this.config.eventIdx) this.availEvent.store(this.nextAvail);
    if (head >= this.size) throw new QueueError('head-range', `avail ring names head ${head}, outside the ${this.size}-entry table`, undefined, head);
    return parseChain(this.chains, head);
  }

  /**
   * Returns a chain to the driver: writes the used element, then publishes the used index (release order).
   * `head` is a chain's head (0..size-1), `writtenLength` the bytes the device wrote into its writable
   * part (a u32). Throws RangeError for values outside those ranges: that is a device bug, not guest data.
   */
  pushUsed(head: number, writtenLength: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size) throw new RangeError(`pushUsed: head ${head} is not a descriptor index of a ${this.size}-entry queue`);
    if (!Number.isInteger(writtenLength) || writtenLength < 0 || writtenLength > 0xffff_ffff) throw new RangeError(`pushUsed: length ${writtenLength} is not a u32`);
    const off = (this.nextUsed & (this.size - 1)) * USED_ELEM_SIZE;
    this.usedRing.setU32(off + USED_ELEM_ID, head);
    this.usedRing.setU32(off + USED_ELEM_LEN, writtenLength);
    this.nextUsed = (this.nextUsed + 1) & IDX_MASK;
    // §2.7.8.1: the element (len included) must be visible before the index that covers it. Atomics.store is a
    // release (stlr on arm64; x86 stores are ordered anyway), so the two plain stores above go first.
    this.usedIdx.store(this.nextUsed);
    this.pushedSinceSignal++;
  }

  /**
   * After a batch of pushUsed: true when the driver wants an interrupt (§2.7.7: EVENT_IDX used_event, or no
   * NO_INTERRUPT flag). False when nothing was pushed since the last call. Each call ends a batch.
   */
  needsInterrupt(): boolean {
    if (this.pushedSinceSignal === 0) return false;
    const oldIdx = this.signalledUsed;
    const newIdx = this.nextUsed;
    const pushed = this.pushedSinceSignal;
    this.signalledUsed = newIdx;
    this.pushedSinceSignal = 0;
    // The loads below are seq-cst and follow the seq-cst store of used.idx in pushUsed: that is the full
    // barrier §2.7.7 needs between "publish used.idx" and "read used_event / flags". Without it, the
    // driver could re-arm (write used_event, then re-check used.idx) in between and both sides would
    // miss the update: a lost interrupt.
    if (this.config.eventIdx) {
      // A batch of 2^16 or more wraps the 16-bit window below; the driver's event is then surely crossed.
      if (pushed >= IDX_MODULUS) return true;
      return vringNeedEvent(this.usedEvent.load(), newIdx, oldIdx);
    }
    return (this.availFlags.load() & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the driver for kicks again; returns true when buffers arrived meanwhile (process them before sleeping).
   * With EVENT_IDX: writes avail_event = the next avail index the device will read (§2.7.10: kick me when you
   * publish that entry; pop() keeps it there too). Without: clears VIRTQ_USED_F_NO_NOTIFY in used.flags.
   *
   * The usual device loop: `do { disableNotifications(); while ((c = pop())) handle(c); } while (enableNotifications());`
   */
  enableNotifications(): boolean {
    if (this.config.eventIdx) {
      this.availEvent.store(this.nextAvail);
    } else {
      this.usedFlagsValue &= ~VIRTQ_USED_F_NO_NOTIFY;
      this.usedFlags.store(this.usedFlagsValue);
    }
    // Seq-cst store then seq-cst load: full barrier. A driver that published a buffer before seeing our
    // store did not kick; the re-read of avail.idx below catches exactly that buffer.
    return this.availIdx.load() !== this.nextAvail;
  }

  /**
   * Asks the driver not to kick while the device is busy draining the queue. Without EVENT_IDX: sets
   * VIRTQ_USED_F_NO_NOTIFY. With EVENT_IDX this is a no-op: avail_event names the entry the device will
   * read next, and while the device is behind, the driver publishes past it without crossing it, so it
   * does not kick (the device must leave used.flags at 0 when EVENT_IDX is negotiated, §2.7.10).
   */
  disableNotifications(): void {
    if (this.config.eventIdx) return;
    this.usedFlagsValue |= VIRTQ_USED_F_NO_NOTIFY;
    this.usedFlags.store(this.usedFlagsValue);
  }
}

/**
 * vring_need_event of linux/virtio_ring.h (§2.7.11; the rule of §2.7.7 and §2.7.10 with EVENT_IDX):
 * true when `eventIdx` is one of the entries [oldIdx, newIdx) just published (u16s, with wraparound).
 * Used for interrupts here, and for kicks by the driver side.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & IDX_MASK) < ((newIdx - oldIdx) & IDX_MASK);
}

/** Throws QueueError unless [addr, addr+len) is a safe, aligned range of guest RAM. */
function checkPart(memory: GuestMemory, what: string, addr: number, len: number, align: number): void {
  if (!Number.isSafeInteger(addr) || addr < 0) throw new QueueError('address', `${what} address ${addr} is not a valid guest-physical address`, undefined, addr);
  if (addr % align !== 0) throw new QueueError('alignment', `${what} at 0x${addr.toString(16)} is not ${align}-byte aligned`, undefined, addr);
  if (!memory.isValid(addr, len)) throw new QueueError('address', `${what} [0x${addr.toString(16)}, +${len}) is not inside guest RAM`, undefined, addr);
}
