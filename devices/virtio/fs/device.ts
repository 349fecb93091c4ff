/**
 * virtio-fs device model (virtio 1.2 §5.11): a tag in the config space, the
 * hiprio queue (0) and one request queue (1), a FUSE server behind them
 * (server.ts), host access through the sandboxed HostDir backend.
 *
 * No notification queue, no DAX window. The hiprio queue carries FORGET /
 * BATCH_FORGET (no reply: the chain goes back with length 0); it is served
 * by the same server. Requests are served synchronously, one chain at a time.
 */
import * as C from '../constants.js';
import { mountTagBytes } from '../tag.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import type { SplitQueue } from '../queue/split-queue.js';
import { queueLink, serveQueue } from '../queue/serve.js';
import * as F from './constants.js';
import type { FuseServer } from './server.js';

/** What the guest sees of a share before mounting it. Structured-cloneable. */
export interface VirtioFsOptions {
  /** Mount tag: 1..36 bytes of UTF-8, no NUL, whitespace or control characters. */
  readonly tag: string;
}

export class VirtioFsDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo;
  private ctx: ActivationContext | null = null;
  private broken = false;

  /** I/O worker. `server` owns the backend (dispose() closes it); `wakeup` is closed by dispose(). RangeError for a bad tag. */
  constructor(readonly options: VirtioFsOptions, readonly server: FuseServer, private readonly wakeup?: Wakeup) {
    this.info = VirtioFsDevice.info(options);
  }

  /** `struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }`, hiprio queue of 128, request queue of 1024, EVENT_IDX + INDIRECT_DESC. */
  static info(opts: VirtioFsOptions): VirtioDeviceInfo {
    const tag = fsTagBytes(opts.tag);
    const config = new Uint8Array(F.FS_CONFIG_SIZE);
    config.set(tag, 0);
    new DataView(config.buffer).setUint32(F.FS_CFG_NUM_REQUEST_QUEUES, 1, true);
    return {
      deviceType: C.VIRTIO_ID_FS,
      queueMaxSizes: [F.FS_HIPRIO_QUEUE_SIZE, F.FS_QUEUE_SIZE],
      features: C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC),
      config,
    };
  }

  /** Throws DeviceNeedsReset when the driver did not enable the request queue. */
  activate(ctx: ActivationContext): void {
    if (!ctx.queues[F.REQUEST_QUEUE]) throw new DeviceNeedsReset('virtio-fs: the driver did not enable the request queue');
    this.ctx = ctx;
    this.broken = false;
    this.wakeup?.watch(ctx.fds, () => {
      this.process(F.HIPRIO_QUEUE);
      this.process(F.REQUEST_QUEUE);
    });
  }

  queueNotify(index: number): void {
    if (index === F.HIPRIO_QUEUE || index === F.REQUEST_QUEUE) this.process(index);
  }

  /** Serves up to one queue size of chains, then yields through the wakeup. Never throws. */
  private process(index: number): void {
    const ctx = this.ctx;
    if (!ctx || this.broken) return;
    const queue: SplitQueue | null | undefined = ctx.queues[index];
    if (!queue) return;
    const link = queueLink(ctx, queue, this.wakeup);
    if (serveQueue(link, `virtio-fs queue ${index}`, (chain) => this.server.serve(ctx.memory, chain)) === 'broken') this.broken = true;
  }

  reset(): void {
    if (this.ctx && this.wakeup) this.wakeup.unwatch(this.ctx.fds);
    this.ctx = null;
    this.broken = false;
    this.server.reset();
  }

  dispose(): void {
    this.reset();
    this.server.dispose();
    this.wakeup?.close();
  }
}

/** The tag's bytes (at most FS_TAG_BYTES): see ../tag.ts. */
export function fsTagBytes(tag: string): Uint8Array {
  return mountTagBytes(tag, F.FS_TAG_BYTES);
}
