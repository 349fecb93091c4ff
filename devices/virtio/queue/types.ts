/**
 * Shapes shared by the split virtqueue (queue/split-queue.ts) and the devices
 * that consume it.
 */
import { FlintvmError } from '../../../lib/errors.js';

/** A guest buffer: `len` bytes at guest-physical `addr`, inside ONE guest memory region (chains are split at region borders). */
export interface Segment {
  readonly addr: number;
  readonly len: number;
}

/**
 * A validated descriptor chain popped from the available ring. Every segment
 * has been checked to lie in guest RAM; readable segments all precede writable
 * ones (§2.7.4.2); the sums fit in 32 bits.
 */
export interface DescriptorChain {
  /** Head descriptor index: what goes back in the used ring. */
  readonly head: number;
  /** Device-readable buffers (driver -> device), in order. */
  readonly readable: readonly Segment[];
  /** Device-writable buffers (device -> driver), in order. */
  readonly writable: readonly Segment[];
  readonly readableLength: number;
  readonly writableLength: number;
}

/**
 * Stable reasons a {@link QueueError} carries (`error.reason`):
 * - `size`, `address`, `alignment`: the queue configuration (constructor).
 * - `restore`: a snapshot's queue position disagrees with the rings in guest memory (constructor).
 * - `avail-idx`: avail.idx moved more than the queue size past the device's position (ring state is broken).
 * - `held`: the device already holds a queue's worth of chains (popped, not yet used) and the driver made
 *   another available: it re-published a head it has not got back.
 * - `head-range`: an avail ring entry names a descriptor outside the table.
 * - `next-range`: a `next` field points outside the (direct or indirect) table.
 * - `loop`: the chain is longer than its time-to-live (queue size; entries of an indirect table).
 * - `indirect-not-negotiated`, `indirect-next`, `indirect-nested`, `indirect-len`, `indirect-addr`: §2.7.5.3 violations.
 * - `buffer-addr`: a buffer is not entirely inside guest RAM.
 * - `order`: a device-readable descriptor follows a device-writable one (§2.7.4.2).
 * - `too-long`: the chain's byte totals do not fit the 32-bit limits (§2.7.5.2).
 * - `short`, `range`: chain-io helpers (chain too short for the access; invalid offset/length).
 */
export type QueueErrorReason =
  | 'size' | 'address' | 'alignment' | 'restore'
  | 'avail-idx' | 'held' | 'head-range' | 'next-range' | 'loop'
  | 'indirect-not-negotiated' | 'indirect-next' | 'indirect-nested' | 'indirect-len' | 'indirect-addr'
  | 'buffer-addr' | 'order' | 'too-long'
  | 'short' | 'range';

/**
 * Why a queue or a chain was rejected. The device then sets DEVICE_NEEDS_RESET (or fails the request).
 * Code `FLINTVM_E_VIRTQUEUE`. When the error is about one chain whose head was
 * valid, `head` is set: the head has been consumed from the available ring and
 * the device should return it with `pushUsed(head, 0)` (or reset the device).
 */
export class QueueError extends FlintvmError {
  /** The head descriptor index of the rejected chain, when it was in range. */
  readonly head?: number;

  constructor(readonly reason: string, message: string, head?: number, value?: unknown) {
    super('FLINTVM_E_VIRTQUEUE', message, { value });
    if (head !== undefined) this.head = head;
  }
}

/** Where the driver placed a queue, and what was negotiated for it (from the transport registers). */
export interface QueueConfig {
  /** Queue size chosen by the driver (QueueNum): a power of 2, 1..32768, at most QueueNumMax. */
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  readonly indirect: boolean;
  /**
   * Where the device continues, for a queue restored from a snapshot (see
   * SplitQueue.saveState); absent for a fresh queue, which starts at 0.
   */
  readonly start?: QueuePosition;
}

/** A device's place in a split queue: the next avail and used ring positions (free-running u16s). */
export interface QueuePosition {
  readonly nextAvail: number;
  readonly nextUsed: number;
}
