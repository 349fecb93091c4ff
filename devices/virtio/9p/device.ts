/**
 * virtio-9p device model (virtio 1.2 §5.3, "9P Transport"): a mount tag in the
 * config space, one request queue, and a 9P2000.L server behind it. Queue
 * processing is in handler.ts, the protocol in server.ts and ops-*.ts, host
 * access in the sandboxed backend (backends/hostdir).
 */
import * as C from '../constants.js';
import { mountTagBytes } from '../tag.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import * as P from './constants.js';
import { P9Handler, type P9HandlerStats } from './handler.js';
import type { P9Server } from './server.js';

/** What the guest sees of a share before mounting it. Structured-cloneable. */
export interface Virtio9pOptions {
  /** Mount tag: 1..31 bytes of UTF-8, no NUL, whitespace or control characters. */
  readonly tag: string;
}

export class Virtio9pDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo;
  private ctx: ActivationContext | null = null;
  private handler: P9Handler | null = null;

  /**
   * I/O worker. `server` answers the 9P messages (and owns the backend: dispose()
   * closes it); `wakeup` lets the device yield after a queue's worth of requests,
   * and is closed by dispose(). Throws RangeError for an invalid tag.
   */
  constructor(readonly options: Virtio9pOptions, readonly server: P9Server, private readonly wakeup?: Wakeup) {
    this.info = Virtio9pDevice.info(options);
  }

  /**
   * Features and config space for a share (main thread, before the guest starts):
   * VIRTIO_9P_MOUNT_TAG, and `struct virtio_9p_config { le16 tag_len; u8 tag[]; }`.
   * Throws RangeError when the tag is not 1..31 bytes or has NUL, whitespace or control characters.
   */
  static info(opts: Virtio9pOptions): VirtioDeviceInfo {
    const tag = tagBytes(opts.tag);
    const config = new Uint8Array(P.VIRTIO_9P_CFG_TAG + tag.length);
    new DataView(config.buffer).setUint16(P.VIRTIO_9P_CFG_TAG_LEN, tag.length, true);
    config.set(tag, P.VIRTIO_9P_CFG_TAG);
    return {
      deviceType: C.VIRTIO_ID_9P,
      queueMaxSizes: [P.P9_QUEUE_SIZE],
      features: C.feature(P.VIRTIO_9P_MOUNT_TAG) | C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC),
      config,
    };
  }

  /** Throws DeviceNeedsReset when the driver did not enable the request queue. */
  activate(ctx: ActivationContext): void {
    const queue = ctx.queues[0];
    if (!queue) throw new DeviceNeedsReset('virtio-9p: the driver did not enable the request queue');
    const wakeup = this.wakeup;
    this.handler = new P9Handler({
      memory: ctx.memory,
      queue,
      signalUsed: () => ctx.signalUsed(),
      needsReset: () => ctx.needsReset(),
      ...(wakeup ? { wakeup: () => wakeup.arm() } : {}),
    }, this.server);
    this.ctx = ctx;
    wakeup?.watch(ctx.fds, () => this.handler?.process());
  }

  queueNotify(index: number): void {
    if (index === 0) this.handler?.process();
  }

  /** Forgets the queue and the 9P session (every fid is clunked). Requests are synchronous, so none is in flight. */
  reset(): void {
    if (this.ctx && this.wakeup) this.wakeup.unwatch(this.ctx.fds);
    this.ctx = null;
    this.handler = null;
    this.server.reset();
  }

  /** Closes the wakeup and the backend's fds. The share's root fd belongs to whoever opened it (openShareBackend's close()). */
  dispose(): void {
    this.reset();
    this.server.dispose();
    this.wakeup?.close();
  }

  /** The handler's counters while active (tests, diagnostics). */
  get stats(): P9HandlerStats | null {
    return this.handler?.stats ?? null;
  }
}

/** The tag's bytes (at most P9_MAX_TAG_BYTES): see ../tag.ts. */
export function tagBytes(tag: string): Uint8Array {
  return mountTagBytes(tag, P.P9_MAX_TAG_BYTES);
}
