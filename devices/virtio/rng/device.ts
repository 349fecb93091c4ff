/**
 * virtio-rng / entropy device (virtio 1.2 §5.4): one request queue; the
 * device fills each chain's writable buffers with random bytes from its
 * EntropySource and returns the chain with the number of bytes written.
 * No feature bits of its own and no config space.
 *
 * I/O worker thread. Guest mistakes never throw: device-readable buffers
 * (the driver should send none, §5.4.6) are ignored, a chain without writable
 * buffers goes back with length 0, a broken queue asks for DEVICE_NEEDS_RESET.
 */
import { log } from '../../../lib/log.js';
import * as C from '../constants.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import type { SplitQueue } from '../queue/split-queue.js';
import { queueLink, serveQueue } from '../queue/serve.js';
import type { EntropySource } from './backend.js';

const debug = log('virtio:rng');

/** Request queue size (QueueNumMax). */
export const RNG_QUEUE_SIZE = 256;
/** Most bytes given per request: bounds the work one chain can ask for (Linux asks for at most a page or so). */
export const RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;

export class RngDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo = RngDevice.info();
  private ctx: ActivationContext | null = null;
  private queue: SplitQueue | null = null;
  private broken = false;
  /** Bytes handed to the guest so far (diagnostics). */
  bytesServed = 0;

  /** `wakeup` lets the device yield after a queue's worth of requests; closed by dispose(). */
  constructor(private readonly source: EntropySource, private readonly wakeup?: Wakeup) {}

  /** Features, queue size and (empty) config space (main thread). */
  static info(): VirtioDeviceInfo {
    return {
      deviceType: C.VIRTIO_ID_RNG,
      queueMaxSizes: [RNG_QUEUE_SIZE],
      features: C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC),
      config: new Uint8Array(0),
    };
  }

  /** Throws DeviceNeedsReset when the driver did not enable the request queue. */
  activate(ctx: ActivationContext): void {
    const queue = ctx.queues[0];
    if (!queue) throw new DeviceNeedsReset('virtio-rng: the driver did not enable the request queue');
    this.ctx = ctx;
    this.queue = queue;
    this.broken = false;
    this.wakeup?.watch(ctx.fds, () => this.process());
  }

  queueNotify(index: number): void {
    if (index === 0) this.process();
  }

  reset(): void {
    if (this.ctx && this.wakeup) this.wakeup.unwatch(this.ctx.fds);
    this.ctx = null;
    this.queue = null;
  }

  dispose(): void {
    this.reset();
    this.wakeup?.close();
  }

  /** Serves up to a queue's worth of chains, then yields (with a wakeup) or keeps going until the ring is empty. */
  private process(): void {
    const ctx = this.ctx;
    const queue = this.queue;
    if (!ctx || !queue || this.broken) return;
    const link = queueLink(ctx, queue, this.wakeup);
    const result = serveQueue(link, 'virtio-rng request queue', (chain) => {
      let written = 0;
      try {
        written = this.source.fill(ctx.memory, chain.writable, RNG_MAX_BYTES_PER_REQUEST);
      } catch (e) {
        // The host failed us: give the guest nothing rather than predictable bytes.
        debug('entropy source failed: %s', (e as Error).message);
      }
      this.bytesServed += written;
      return written;
    });
    if (result === 'broken') this.broken = true;
  }
}
