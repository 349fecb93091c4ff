/**
 * virtio-net device model (virtio 1.2 §5.1): feature bits, the config space
 * (MAC and link status), and activation/reset around one receive and one
 * transmit queue. Queue processing is in rx-handler.ts and tx-handler.ts,
 * packet checks in packet.ts, host I/O in the backend (backends/tap.ts).
 *
 * Offered: MAC, STATUS, MRG_RXBUF, CSUM + HOST_TSO4/TSO6/ECN (the guest may
 * hand over partial-checksum and TSO packets, which the tap takes with their
 * vnet header), GUEST_CSUM + GUEST_TSO4/TSO6/ECN (the tap may hand the guest
 * such packets; enabled on the tap per negotiation with TUNSETOFFLOAD),
 * EVENT_IDX and INDIRECT_DESC. Not offered: CTRL_VQ, MQ, UFO, MTU.
 */
import { log } from '../../../lib/log.js';
import * as C from '../constants.js';
import { DeviceNeedsReset, type ActivationContext, type VirtioDevice, type VirtioDeviceInfo } from '../device.js';
import type { Wakeup } from '../backends/wakeup.js';
import { NO_OFFLOADS, type NetBackend } from './backend.js';
import * as N from './constants.js';
import { parseMac } from './mac.js';
import { negotiatedOffloads } from './packet.js';
import { RxHandler, type RxStats } from './rx-handler.js';
import { TxHandler, type TxStats } from './tx-handler.js';
import { parseNetState, type NetState } from './snapshot.js';

const debug = log('virtio:net');

/** What defines a NIC to the guest. Structured-cloneable. */
export interface NetDeviceOptions {
  /** The guest's MAC address, `xx:xx:xx:xx:xx:xx`, unicast. */
  readonly mac: string;
  /**
   * Offer checksum and TSO offloads in both directions (default true). Needs a
   * backend that carries virtio_net_hdr (TapBackend does: IFF_VNET_HDR).
   */
  readonly offloads?: boolean;
  /** Offer VIRTIO_NET_F_MRG_RXBUF (default true). */
  readonly mergeableRxBuffers?: boolean;
}

const bit = C.feature;

export class NetDevice implements VirtioDevice {
  readonly info: VirtioDeviceInfo;
  private ctx: ActivationContext | null = null;
  private rx: RxHandler | null = null;
  private tx: TxHandler | null = null;
  private linkUp = true;

  /**
   * I/O worker. `backend` moves the frames (TapBackend); `wakeup` lets the
   * transmit side yield after a queue's worth of packets, and is closed by
   * dispose(). Throws RangeError for an invalid MAC.
   */
  constructor(readonly options: NetDeviceOptions, private readonly backend: NetBackend, private readonly wakeup?: Wakeup) {
    this.info = NetDevice.info(options);
  }

  /**
   * Features, queue sizes and config space of a NIC (main thread, before the
   * guest starts). Throws RangeError when `mac` is not a unicast MAC address.
   */
  static info(opts: NetDeviceOptions): VirtioDeviceInfo {
    const mac = parseMac(opts.mac);
    if (typeof mac === 'string') throw new RangeError(`MAC address '${opts.mac}': ${mac}`);
    let features = bit(N.VIRTIO_NET_F_MAC) | bit(N.VIRTIO_NET_F_STATUS) | bit(C.VIRTIO_F_EVENT_IDX) | bit(C.VIRTIO_F_INDIRECT_DESC);
    if (opts.mergeableRxBuffers ?? true) features |= bit(N.VIRTIO_NET_F_MRG_RXBUF);
    if (opts.offloads ?? true) {
      features |= bit(N.VIRTIO_NET_F_CSUM) | bit(N.VIRTIO_NET_F_HOST_TSO4) | bit(N.VIRTIO_NET_F_HOST_TSO6) | bit(N.VIRTIO_NET_F_HOST_ECN)
        | bit(N.VIRTIO_NET_F_GUEST_CSUM) | bit(N.VIRTIO_NET_F_GUEST_TSO4) | bit(N.VIRTIO_NET_F_GUEST_TSO6) | bit(N.VIRTIO_NET_F_GUEST_ECN);
    }
    const config = new Uint8Array(N.VIRTIO_NET_CONFIG_SIZE);
    config.set(mac, N.VIRTIO_NET_CFG_MAC);
    new DataView(config.buffer).setUint16(N.VIRTIO_NET_CFG_STATUS, N.VIRTIO_NET_S_LINK_UP, true);
    return { deviceType: C.VIRTIO_ID_NET, queueMaxSizes: [N.NET_QUEUE_SIZE, N.NET_QUEUE_SIZE], features, config };
  }

  /** Throws DeviceNeedsReset when the driver did not enable both queues. */
  activate(ctx: ActivationContext): void {
    const rxq = ctx.queues[N.NET_RX_QUEUE];
    const txq = ctx.queues[N.NET_TX_QUEUE];
    if (!rxq || !txq) throw new DeviceNeedsReset('virtio-net: the driver did not enable both the receive and the transmit queue');
    const { guest, host } = negotiatedOffloads(ctx.features);
    let guestOffloads = guest;
    try {
      this.backend.setOffload(guest);
    } catch (e) {
      // The tap keeps its previous (no-offload) setting; packets it has not segmented are dropped by the rx checks.
      debug('cannot set the backend offloads %o: %s', guest, (e as Error).message);
      guestOffloads = NO_OFFLOADS;
    }
    const common = { memory: ctx.memory, signalUsed: () => ctx.signalUsed(), needsReset: () => ctx.needsReset() };
    const wakeup = this.wakeup;
    this.tx = new TxHandler({ ...common, queue: txq }, this.backend, host, wakeup ? () => wakeup.arm() : undefined);
    this.rx = new RxHandler({ ...common, queue: rxq }, this.backend, ctx.fds, {
      mergeable: (ctx.features & bit(N.VIRTIO_NET_F_MRG_RXBUF)) !== 0n,
      // A guest without GUEST_CSUM still gets DATA_VALID cleared, not dropped (packet.ts).
      guest: guestOffloads,
    });
    this.ctx = ctx;
    wakeup?.watch(ctx.fds, () => this.tx?.process());
    debug('active: mergeable %s, guest offloads %o, host offloads %o', (ctx.features & bit(N.VIRTIO_NET_F_MRG_RXBUF)) !== 0n, guestOffloads, host);
  }

  queueNotify(index: number): void {
    if (index === N.NET_RX_QUEUE) this.rx?.process();
    else if (index === N.NET_TX_QUEUE) this.tx?.process();
  }

  /** Stops watching the backend, forgets the queues and held buffers, and turns the backend's offloads off. */
  reset(): void {
    this.rx?.stop();
    if (this.ctx && this.wakeup) this.wakeup.unwatch(this.ctx.fds);
    if (this.ctx) {
      try {
        this.backend.setOffload(NO_OFFLOADS);
      } catch (e) {
        debug('cannot clear the backend offloads: %s', (e as Error).message);
      }
    }
    this.ctx = null;
    this.rx = null;
    this.tx = null;
  }

  /** Closes the wakeup. The tap fd belongs to whoever opened it (openTap's close()). */
  dispose(): void {
    this.reset();
    this.wakeup?.close();
  }

  /**
   * Sets the link status the guest sees (config `status`, VIRTIO_NET_S_LINK_UP)
   * and raises the config-change interrupt. Only while active (a no-op
   * otherwise); the setting stays in config space across driver resets.
   */
  setLinkUp(up: boolean): void {
    if (!this.ctx || up === this.linkUp) return;
    this.linkUp = up;
    const bytes = new Uint8Array(2);
    new DataView(bytes.buffer).setUint16(0, up ? N.VIRTIO_NET_S_LINK_UP : 0, true);
    this.ctx.updateConfig(N.VIRTIO_NET_CFG_STATUS, bytes);
  }

  /**
   * For a snapshot (I/O worker, between two loop turns, vCPUs paused): the
   * receive chains held for the next packet, the counters and the broken
   * flags (snapshot.ts). Changes nothing: the device carries on as before.
   */
  saveState(): NetState {
    const { rx, tx } = this;
    if (!rx || !tx) return { rx: null, tx: null };
    const r = rx.saveState();
    return { rx: { ...r, stats: { ...rx.stats } }, tx: { broken: tx.isBroken, stats: { ...tx.stats } } };
  }

  /**
   * A restored device (after activate() with its queues at their saved
   * positions when `active`; before the transport polls them): validates
   * `state` from the snapshot file and applies it. Throws SnapshotStateError
   * naming the field. The poll that follows starts receiving again.
   */
  restoreState(state: unknown, active: boolean): void {
    const { rx, tx, ctx } = this;
    if (active !== (ctx !== null)) throw new Error(`virtio-net: restoreState(active: ${active}) on a device that is ${ctx ? '' : 'not '}active`);
    const s = parseNetState(state, ctx ? { memory: ctx.memory, rx: ctx.queues[N.NET_RX_QUEUE]!, tx: ctx.queues[N.NET_TX_QUEUE]! } : null);
    if (!rx || !tx || !s.rx || !s.tx) return;
    rx.restoreState(s.rx.held, s.rx.broken);
    Object.assign(rx.stats, s.rx.stats);
    if (s.tx.broken) tx.markBroken();
    Object.assign(tx.stats, s.tx.stats);
  }

  /** The handlers' counters while active (tests, diagnostics). */
  get stats(): { rx: RxStats; tx: TxStats } | null {
    return this.rx && this.tx ? { rx: this.rx.stats, tx: this.tx.stats } : null;
  }

  /** Whether the backend fd is watched for received packets (tests, diagnostics). */
  get rxWatching(): boolean {
    return this.rx?.isWatching ?? false;
  }
}
