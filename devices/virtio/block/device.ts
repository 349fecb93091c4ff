/**
 * virtio-blk device model (virtio 1.2 §5.2): feature bits, the config space,
 * and activation/reset around one request queue. Queue processing is in
 * handler.ts, request validation in request.ts, host I/O in the backend.
 */
import * as C from '../constants.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import type { BlockBackend } from './backend.js';
import * as B from './constants.js';
import { BlockHandler, type BlockStats } from './handler.js';
import { outstanding } from '../queue/saved-chain.js';
import { SnapshotStateError } from '../../../lib/errors.js';
import { parseBlockState, type BlockState } from './snapshot.js';

/** What defines a disk to the guest. Structured-cloneable. */
export interface BlockDeviceOptions {
  /** Disk size in bytes: a positive multiple of 512 (a safe integer). */
  readonly sizeBytes: number;
  /** Offer VIRTIO_BLK_F_RO and refuse every write. */
  readonly readOnly: boolean;
  /** GET_ID answer: at most 20 bytes of UTF-8 (NUL-padded when shorter). Default: empty (20 NULs). */
  readonly serial?: string;
}

export class BlockDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo;
  private readonly id: Uint8Array;
  private ctx: ActivationContext | null = null;
  private handler: BlockHandler | null = null;

  /**
   * I/O worker. `backend` does the host I/O (FileBackend); `wakeup` lets the
   * device yield after a queue's worth of requests (see backends/wakeup.ts),
   * and is closed by dispose(). Throws RangeError for invalid options.
   */
  constructor(readonly options: BlockDeviceOptions, private readonly backend: BlockBackend, private readonly wakeup?: Wakeup) {
    this.info = BlockDevice.info(options);
    this.id = serialBytes(options.serial);
  }

  /**
   * Features, queue size and config space for a disk (main thread, before the
   * guest starts). Throws RangeError when `sizeBytes` is not a positive
   * multiple of 512 or the serial is longer than 20 bytes.
   */
  static info(opts: BlockDeviceOptions): VirtioDeviceInfo {
    const { sizeBytes, readOnly } = opts;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % B.VIRTIO_BLK_SECTOR_SIZE !== 0) {
      throw new RangeError(`disk size ${sizeBytes} is not a positive multiple of ${B.VIRTIO_BLK_SECTOR_SIZE} bytes`);
    }
    serialBytes(opts.serial);
    let features = C.feature(B.VIRTIO_BLK_F_SIZE_MAX) | C.feature(B.VIRTIO_BLK_F_SEG_MAX) | C.feature(B.VIRTIO_BLK_F_BLK_SIZE)
      | C.feature(B.VIRTIO_BLK_F_FLUSH) | C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC);
    // A read-only disk refuses discard and write-zeroes anyway, so it does not advertise them.
    features |= readOnly ? C.feature(B.VIRTIO_BLK_F_RO) : C.feature(B.VIRTIO_BLK_F_DISCARD) | C.feature(B.VIRTIO_BLK_F_WRITE_ZEROES);

    const config = new Uint8Array(B.VIRTIO_BLK_CONFIG_SIZE);
    const dv = new DataView(config.buffer);
    dv.setBigUint64(B.VIRTIO_BLK_CFG_CAPACITY, BigInt(sizeBytes / B.VIRTIO_BLK_SECTOR_SIZE), true);
    dv.setUint32(B.VIRTIO_BLK_CFG_SIZE_MAX, B.BLOCK_SIZE_MAX, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_SEG_MAX, B.BLOCK_SEG_MAX, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_BLK_SIZE, B.VIRTIO_BLK_SECTOR_SIZE, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, B.BLOCK_MAX_DISCARD_SECTORS, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_MAX_DISCARD_SEG, B.BLOCK_MAX_DISCARD_SEG, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT, B.BLOCK_DISCARD_SECTOR_ALIGNMENT, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS, B.BLOCK_MAX_WRITE_ZEROES_SECTORS, true);
    dv.setUint32(B.VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG, B.BLOCK_MAX_WRITE_ZEROES_SEG, true);
    // Write-zeroes with the unmap flag punches a hole, i.e. may deallocate (§5.2.6.2).
    dv.setUint8(B.VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP, 1);
    return { deviceType: C.VIRTIO_ID_BLOCK, queueMaxSizes: [B.BLOCK_QUEUE_SIZE], features, config };
  }

  /** Throws DeviceNeedsReset when the driver did not enable the request queue. */
  activate(ctx: ActivationContext): void {
    const queue = ctx.queues[0];
    if (!queue) throw new DeviceNeedsReset('virtio-blk: the driver did not enable the request queue');
    const has = (bit: number) => (ctx.features & C.feature(bit)) !== 0n;
    const wakeup = this.wakeup;
    this.handler = new BlockHandler(
      {
        memory: ctx.memory,
        queue,
        signalUsed: () => ctx.signalUsed(),
        needsReset: () => ctx.needsReset(),
        ...(wakeup ? { wakeup: () => wakeup.arm() } : {}),
      },
      this.backend,
      {
        capacityBytes: this.options.sizeBytes,
        readOnly: this.options.readOnly,
        discard: has(B.VIRTIO_BLK_F_DISCARD),
        writeZeroes: has(B.VIRTIO_BLK_F_WRITE_ZEROES),
      },
      this.id,
    );
    this.ctx = ctx;
    wakeup?.watch(ctx.fds, () => this.handler?.process());
  }

  queueNotify(index: number): void {
    if (index === 0) this.handler?.process();
  }

  /** Forgets the queue; requests are synchronous, so none is in flight. */
  reset(): void {
    if (this.ctx && this.wakeup) this.wakeup.unwatch(this.ctx.fds);
    this.ctx = null;
    this.handler = null;
  }

  /** Closes the wakeup. The disk fd belongs to whoever opened it (openDiskImage's close()). */
  dispose(): void {
    this.reset();
    this.wakeup?.close();
  }

  /**
   * For a snapshot (I/O worker, between two loop turns, vCPUs paused): makes
   * every write the device completed durable (fdatasync of the image, for a
   * writable disk), so the image file and the guest memory saved with it are
   * a consistent pair: whatever the guest saw completed is in the file. Then
   * returns the device's own state (snapshot.ts). Nothing is in flight: each
   * request completes within the turn that popped it. Throws (HostError) when
   * the image cannot be synced; the snapshot must then fail.
   */
  saveState(): BlockState {
    if (!this.options.readOnly) this.backend.flush();
    const h = this.handler;
    return { broken: h?.isBroken ?? false, stats: h ? { ...h.stats } : null };
  }

  /**
   * A restored device (after activate() with the queue at its saved position
   * when `active`): validates `state` from the snapshot file and applies it.
   * Throws SnapshotStateError naming the field; a queue with chains
   * outstanding (the device never holds one) is refused too.
   */
  restoreState(state: unknown, active: boolean): void {
    const h = this.handler;
    if (active !== (h !== null)) throw new Error(`virtio-blk: restoreState(active: ${active}) on a device that is ${h ? '' : 'not '}active`);
    const s = parseBlockState(state, active);
    if (!h || !s.stats) return;
    const queue = this.ctx!.queues[0]!;
    if (!s.broken && outstanding(queue) !== 0) {
      throw new SnapshotStateError('broken', `is false, but the request queue has ${outstanding(queue)} chains outstanding (a virtio-blk device holds none between loop turns)`, s.broken);
    }
    Object.assign(h.stats, s.stats);
    if (s.broken) h.markBroken();
  }

  /** The handler's counters while active (tests, diagnostics). */
  get stats(): BlockStats | null {
    return this.handler?.stats ?? null;
  }
}

/** The 20-byte GET_ID answer: UTF-8 serial, NUL-padded. Throws RangeError when longer than 20 bytes. */
function serialBytes(serial: string | undefined): Uint8Array {
  const bytes = new TextEncoder().encode(serial ?? '');
  if (bytes.length > B.VIRTIO_BLK_ID_BYTES) throw new RangeError(`serial '${serial}' is ${bytes.length} bytes; at most ${B.VIRTIO_BLK_ID_BYTES} allowed`);
  const id = new Uint8Array(B.VIRTIO_BLK_ID_BYTES);
  id.set(bytes);
  return id;
}
