/**
 * The contract between a virtio device model and the rest of flintvm.
 *
 * A device model runs on the I/O worker thread. It never sees MMIO offsets
 * (the transport owns the registers) and imports no koffi, fs or net: host I/O
 * goes through its backend. It is created from structured-cloneable params
 * by a factory on the I/O worker, activated when the driver sets DRIVER_OK,
 * and reset when the driver writes 0 to the status register.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { SplitQueue } from './queue/split-queue.js';
import type { FdWatcher } from '../../lib/io/fd-watcher.js';

export type { FdWatcher };

/** What the transport needs to know about a device before the guest starts (set up on the main thread). */
export interface VirtioDeviceInfo {
  /** §5 device ID (VIRTIO_ID_*). */
  readonly deviceType: number;
  /** Maximum size of each queue (a power of 2, at most 32768); the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Feature bits the device offers (VIRTIO_F_VERSION_1 is added by the transport). */
  readonly features: bigint;
  /** Initial device configuration space (little-endian fields as in §5.x). */
  readonly config: Uint8Array;
}


/** What a device gets when the driver sets DRIVER_OK. Valid until reset() or dispose(). */
export interface ActivationContext {
  readonly memory: GuestMemory;
  /** One entry per queue of the device; null when the driver did not enable that queue. */
  readonly queues: readonly (SplitQueue | null)[];
  /** The features the driver accepted. */
  readonly features: bigint;
  /** Raises the used-buffer interrupt (sets the VRING bit of InterruptStatus, then signals the irqfd). */
  signalUsed(): void;
  /**
   * Updates bytes of the config space (bumps ConfigGeneration) and raises the
   * config-change interrupt. The bytes must lie in one aligned 4-byte word:
   * with a register page the driver reads the config without exiting, one
   * word at a time, so only a change inside one word is atomic for it.
   */
  updateConfig(offset: number, bytes: Uint8Array): void;
  /** Backend fds for the I/O worker's epoll loop. */
  readonly fds: FdWatcher;
  /**
   * The driver broke the device (e.g. a malformed queue): sets DEVICE_NEEDS_RESET
   * and raises the config-change interrupt (§2.1.2). The device should stop
   * processing until reset() is called.
   */
  needsReset(): void;
}

/** A device model on the I/O worker. */
export interface VirtioDevice {
  readonly info: VirtioDeviceInfo;
  /** The driver set DRIVER_OK. Throwing (e.g. a queue the device needs is missing) sets DEVICE_NEEDS_RESET. */
  activate(ctx: ActivationContext): void;
  /** The driver notified queue `index` (an ioeventfd fired). Never throws because of guest data. */
  queueNotify(index: number): void;
  /** The driver reset the device: forget queues and in-flight state; stop touching guest memory before returning. */
  reset(): void;
  /** The VM is going away: release host resources (fds stay owned by whoever opened them unless documented). */
  dispose(): void;
}

/** A device that the guest drove into an unrecoverable state: the transport sets DEVICE_NEEDS_RESET. */
export class DeviceNeedsReset extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceNeedsReset';
  }
}
