/**
 * virtio-vsock device model (virtio 1.2 §5.10) in Firecracker's "hybrid"
 * style: guest AF_VSOCK stream sockets meet host AF_UNIX sockets.
 *
 * - Host-initiated: a host client connects to `udsPath` and writes
 *   `CONNECT <port>\n`; the guest gets a REQUEST from (CID 2, a host port
 *   from 2^30 up); on its RESPONSE the client reads `OK <host port>\n` and the
 *   two streams are spliced; on RST (nobody listens) the client is closed.
 * - Guest-initiated: a REQUEST to (CID 2, port P) connects to the Unix socket
 *   `<udsPath>_P`; RESPONSE on success, RST otherwise.
 *
 * Features, config space and activation/reset are here; the connections and
 * queue processing are in muxer.ts, host sockets in the backend.
 */
import * as C from '../constants.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import type { Ticker, VsockSockets } from './backend.js';
import * as V from './constants.js';
import { VsockMuxer, type VsockStats } from './muxer.js';
import { parseVsockState, vsockState, type VsockState } from './snapshot.js';

/** What defines the device. Structured-cloneable. */
export interface VsockDeviceOptions {
  /** The guest's context ID: an integer, 3 <= cid < 2^32 - 1 (§5.10.4: 0-2 and 0xffffffff are reserved). */
  readonly guestCid: number;
  /** Guest-initiated connections to host port P go to the Unix socket `${udsPath}_${P}`. */
  readonly udsPath: string;
  /** Shorter timeouts (tests). */
  readonly timeouts?: Partial<V.VsockTimeouts>;
}

export class VsockDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo;
  private muxer: VsockMuxer | null = null;
  private ctx: ActivationContext | null = null;
  private readonly timeouts: V.VsockTimeouts;

  /**
   * I/O worker. `listenFd` is the listening socket at udsPath (from
   * openVsockBackend; not closed by the device). The device owns every
   * connection socket it accepts or makes, the ticker and the wakeup, and
   * closes them in dispose(). Throws RangeError for invalid options.
   */
  constructor(
    readonly options: VsockDeviceOptions,
    private readonly listenFd: number,
    private readonly sockets: VsockSockets,
    private readonly ticker: Ticker,
    private readonly wakeup?: Wakeup,
    private readonly now?: () => number,
  ) {
    this.info = VsockDevice.info(options);
    this.timeouts = { ...V.DEFAULT_VSOCK_TIMEOUTS, ...(options.timeouts ?? {}) };
  }

  /**
   * Features, queue sizes and config space (main thread, before the guest
   * starts). Stream sockets only: VIRTIO_VSOCK_F_STREAM, no SEQPACKET.
   * Throws RangeError for a reserved or out-of-range CID.
   */
  static info(opts: Pick<VsockDeviceOptions, 'guestCid'>): VirtioDeviceInfo {
    const cid = opts.guestCid;
    if (!Number.isInteger(cid) || cid < V.VSOCK_MIN_GUEST_CID || cid >= V.VMADDR_CID_ANY) {
      throw new RangeError(`guest CID ${cid} is not an integer in ${V.VSOCK_MIN_GUEST_CID}..${V.VMADDR_CID_ANY - 1}`);
    }
    const config = new Uint8Array(V.VIRTIO_VSOCK_CONFIG_SIZE);
    // §5.10.4: only the low 32 bits are used; the upper ones stay zero.
    new DataView(config.buffer).setBigUint64(V.VIRTIO_VSOCK_CFG_GUEST_CID, BigInt(cid), true);
    return {
      deviceType: C.VIRTIO_ID_VSOCK,
      queueMaxSizes: [V.VSOCK_QUEUE_SIZE, V.VSOCK_QUEUE_SIZE, V.VSOCK_QUEUE_SIZE],
      features: C.feature(V.VIRTIO_VSOCK_F_STREAM) | C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC),
      config,
    };
  }

  /** Throws DeviceNeedsReset when the driver did not enable the rx or tx queue (the event queue is optional). */
  activate(ctx: ActivationContext): void {
    const rx = ctx.queues[V.VSOCK_QUEUE_RX];
    const tx = ctx.queues[V.VSOCK_QUEUE_TX];
    if (!rx || !tx) throw new DeviceNeedsReset('virtio-vsock: the driver did not enable the rx and tx queues');
    const wakeup = this.wakeup;
    const muxer = new VsockMuxer(
      {
        memory: ctx.memory, rx, tx, event: ctx.queues[V.VSOCK_QUEUE_EVENT] ?? null, fds: ctx.fds,
        signalUsed: () => ctx.signalUsed(), needsReset: () => ctx.needsReset(),
      },
      { guestCid: this.options.guestCid, udsPath: this.options.udsPath, listenFd: this.listenFd, timeouts: this.timeouts, ...(this.now ? { now: this.now } : {}) },
      this.sockets,
      this.ticker,
      wakeup ? () => wakeup.arm() : undefined,
    );
    this.muxer = muxer;
    this.ctx = ctx;
    this.ticker.watch(ctx.fds, () => this.muxer?.tick());
    wakeup?.watch(ctx.fds, () => this.muxer?.resume());
  }

  queueNotify(index: number): void {
    const m = this.muxer;
    if (!m) return;
    if (index === V.VSOCK_QUEUE_TX) m.notifyTx();
    else if (index === V.VSOCK_QUEUE_RX) m.notifyRx();
    else if (index === V.VSOCK_QUEUE_EVENT) m.notifyEvent();
  }

  /**
   * Sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET after closing every connection
   * (for a snapshot restore or migration: the guest drops its connections,
   * keeps its listeners, and re-reads guest_cid). No-op while not active.
   */
  transportReset(): void {
    this.muxer?.transportReset();
  }

  /**
   * For a snapshot (I/O worker, between two loop turns, vCPUs paused): what
   * survives it (snapshot.ts): the rx chain held, the next host port, the
   * broken flag, the counters. Connections are not saved (host sockets cannot
   * be); this device keeps them and carries on as before.
   */
  saveState(): VsockState {
    const m = this.muxer;
    return m ? vsockState(m.saveState(), m.stats) : { muxer: null };
  }

  /**
   * A restored device (after activate() with its queues at their saved
   * positions when `active`; before the transport polls them): validates
   * `state` from the snapshot file (SnapshotStateError naming the field) and
   * applies it. Then, unless the rings were broken, it serves what the guest
   * sent before the snapshot (so connections it asked for are dropped with
   * the rest) and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: now if the driver
   * has an event buffer posted, else on its next event-queue kick.
   */
  restoreState(state: unknown, active: boolean): void {
    const { muxer, ctx } = this;
    if (active !== (ctx !== null)) throw new Error(`virtio-vsock: restoreState(active: ${active}) on a device that is ${ctx ? '' : 'not '}active`);
    const s = parseVsockState(state, ctx ? {
      memory: ctx.memory, rx: ctx.queues[V.VSOCK_QUEUE_RX]!, tx: ctx.queues[V.VSOCK_QUEUE_TX]!, event: ctx.queues[V.VSOCK_QUEUE_EVENT] ?? null,
    } : null);
    if (!muxer || !s) return;
    muxer.restoreState(s.muxer);
    Object.assign(muxer.stats, s.stats);
    if (s.muxer.broken) return;
    muxer.notifyTx();
    muxer.transportReset();
  }

  /** The driver reset the device: every connection and host client is closed; the listening socket stays open. */
  reset(): void {
    this.muxer?.close();
    this.muxer = null;
    if (this.ctx) {
      this.ticker.unwatch(this.ctx.fds);
      this.wakeup?.unwatch(this.ctx.fds);
    }
    this.ctx = null;
  }

  /** Closes the ticker and the wakeup. The listening socket belongs to openVsockBackend's close(). */
  dispose(): void {
    this.reset();
    this.ticker.close();
    this.wakeup?.close();
  }

  /** The muxer's counters while active (tests, diagnostics). */
  get stats(): VsockStats | null {
    return this.muxer?.stats ?? null;
  }

  /** The connection multiplexer while active (tests, diagnostics). */
  get mux(): VsockMuxer | null {
    return this.muxer;
  }
}
