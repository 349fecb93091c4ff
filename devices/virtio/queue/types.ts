/**
 * Shapes shared by the split virtqueue (queue/split-queue.ts) and the devices
 * that consume it.
 */

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

/** Why a queue or a chain was rejected. The device then sets DEVICE_NEEDS_RESET (or fails the request). */
export class QueueError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
    this.name = 'QueueError';
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
}
