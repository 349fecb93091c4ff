/**
 * virtio-net receive queue (virtio 1.2 §5.1.6.3): move packets from the
 * backend straight into the guest's receive buffers.
 *
 * - Chains popped from the ring are held until a packet fills them, in ring
 *   order. A packet is read with ONE readv into the held buffers: the first
 *   chain only, or, with VIRTIO_NET_F_MRG_RXBUF, as many chains as it takes
 *   (the backend gives no way to learn a packet's size before reading it, so
 *   the device first gathers room for the largest packet, NET_MAX_PACKET).
 *   The chains the packet filled go back to the driver with their lengths,
 *   and num_buffers in the first one's header says how many (§5.1.6.4).
 * - Back-pressure: the backend fd is watched only while the guest has given
 *   enough buffers. Short of them, the device re-enables rx kicks and stops
 *   watching; the next kick resumes. No busy loop, no drops while waiting
 *   (the kernel queues, then drops at the tap, as for any slow reader).
 * - A packet too large for the held buffers (the backend reports more bytes
 *   than they hold: it was truncated) or one the guest cannot take (a GSO or
 *   partial-checksum packet it did not negotiate) is dropped; the buffers stay
 *   held for the next packet.
 * - At most NET_RX_BUDGET packets per wakeup; the fd is level-triggered, so
 *   the loop calls back after serving the others.
 *
 * I/O worker thread only. Never throws because of guest data.
 */
import { log } from '../../../lib/log.js';
import type { FdWatcher } from '../device.js';
import { readChainInto, writeChain } from '../queue/chain-io.js';
import type { DescriptorChain, Segment } from '../queue/types.js';
import { saveChain, type SavedChain } from '../queue/saved-chain.js';
import { IovecQueue } from '../backends/iovec.js';
import { queueBroken } from '../queue/serve.js';
import type { NetBackend, NetOffloads } from './backend.js';
import * as N from './constants.js';
import { rxHeaderVerdict } from './packet.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';
import type { NetQueueContext } from './tx-handler.js';

const debug = log('virtio:net');

/** Receive counters (tests, diagnostics). */
export interface RxStats {
  /** Packets delivered to the guest. */
  packets: number;
  /** Their bytes, vnet header included. */
  bytes: number;
  /** Packets read from the backend and dropped (truncated, or offloads the guest cannot take). */
  dropped: number;
  /** Receive chains returned unused for the guest's mistakes. */
  malformed: number;
  /** Times the device stopped watching the backend for want of buffers. */
  pauses: number;
}

/** A receive chain waiting for a packet. */
interface HeldChain {
  readonly head: number;
  /** Number of its segments in `RxHandler.segments`. */
  readonly segmentCount: number;
  /** Its writable bytes. */
  readonly capacity: number;
}

export interface RxOptions {
  /** VIRTIO_NET_F_MRG_RXBUF negotiated: a packet may span several chains. */
  readonly mergeable: boolean;
  /** The guest's negotiated receive offloads. */
  readonly guest: NetOffloads;
}

export class RxHandler {
  readonly stats: RxStats = { packets: 0, bytes: 0, dropped: 0, malformed: 0, pauses: 0 };
  private readonly held: HeldChain[] = [];
  /** The writable segments of the held chains, in order. */
  private segments: Segment[] = [];
  /** Their iovecs, in the same order (each host address looked up once, when the chain is held). */
  private readonly iovecs = new IovecQueue();
  /** Sum of the held chains' capacities. */
  private room = 0;
  private watching = false;
  private broken = false;
  private backendFailed = false;
  private stopped = false;
  private readonly guestLog = new RateLimitedLog(debug, 'rx: guest error');
  private readonly dropLog = new RateLimitedLog(debug, 'rx: dropped');
  private readonly numBuffers = new Uint8Array(2);
  /** Where each packet's header is read to be checked. */
  private readonly header = new Uint8Array(N.VIRTIO_NET_HDR_SIZE);

  constructor(
    private readonly ctx: NetQueueContext,
    private readonly backend: NetBackend,
    private readonly fds: FdWatcher,
    private readonly opts: RxOptions,
  ) {}

  /** Whether the backend fd is watched now (tests, diagnostics). */
  get isWatching(): boolean {
    return this.watching;
  }

  /** Receive chains held, waiting for packets (tests, diagnostics). */
  get heldChains(): number {
    return this.held.length;
  }

  /** Stops for good (reset/dispose): unwatches the backend and forgets the held chains. */
  stop(): void {
    this.stopped = true;
    this.unwatch();
    this.held.length = 0;
    this.segments = [];
    this.iovecs.clear();
    this.room = 0;
  }

  /**
   * Delivers waiting packets into the guest's buffers: called on activation,
   * on every rx kick (the driver added buffers) and when the backend is
   * readable. Handles at most NET_RX_BUDGET packets. Never throws.
   */
  process(): void {
    if (this.broken || this.backendFailed || this.stopped) return;
    try {
      for (let reads = 0; reads < N.NET_RX_BUDGET; reads++) {
        if (!this.ready()) {
          // Out of buffers: sleep until the driver kicks (ready() re-enabled kicks).
          if (this.watching) this.stats.pauses++;
          this.unwatch();
          break;
        }
        this.watch();
        if (!this.readOne()) break;
      }
      this.interruptIfWanted();
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * Holds enough buffers for the next packet, popping chains as needed; false
   * when the guest has not given enough (kicks are then enabled). §2.7.10:
   * after enabling kicks, the ring is checked once more, so a buffer published
   * meanwhile is not slept on.
   */
  private ready(): boolean {
    const { queue } = this.ctx;
    // A driver can have at most queue.size chains outstanding, so a well-behaved one never needs more
    // pops than that here; the bound stops a guest that re-posts malformed chains as fast as they come back.
    let pops = 2 * queue.size;
    for (;;) {
      pops -= this.gather(pops);
      if (this.enough()) {
        queue.disableNotifications();
        return true;
      }
      if (!queue.enableNotifications() || pops <= 0) return false;
    }
  }

  /** Pops chains (at most `max`) until the held ones are enough or the ring is empty; returns the pops made. */
  private gather(max: number): number {
    let pops = 0;
    while (pops < max && !this.enough()) {
      const chain = this.ctx.queue.pop();
      pops++;
      if (chain === null) break;
      if (chain.readable.length > 0 || chain.writableLength < N.VIRTIO_NET_HDR_SIZE) {
        // §5.1.6.3.1: every receive buffer holds at least a header, and is device-writable.
        this.stats.malformed++;
        this.guestLog.note('chain %d: %d readable and %d writable bytes; a receive buffer needs %d writable only; returned unused',
          chain.head, chain.readableLength, chain.writableLength, N.VIRTIO_NET_HDR_SIZE);
        this.ctx.queue.pushUsed(chain.head, 0);
        continue;
      }
      this.hold(chain);
    }
    return pops;
  }

  private hold(chain: DescriptorChain): void {
    this.iovecs.push(this.ctx.memory, chain.writable);
    this.held.push({ head: chain.head, segmentCount: chain.writable.length, capacity: chain.writableLength });
    this.room += chain.writableLength;
    for (const s of chain.writable) this.segments.push(s);
  }

  /**
   * For a snapshot: the chains held for the next packet (a restored device
   * holds them again, so the driver's buffers are neither lost nor returned
   * empty), and whether the ring was broken (then nothing is held).
   */
  saveState(): { held: SavedChain[]; broken: boolean } {
    if (this.broken) return { held: [], broken: true };
    let at = 0;
    return {
      broken: false,
      held: this.held.map((c) => {
        const writable = this.segments.slice(at, at + c.segmentCount);
        at += c.segmentCount;
        return saveChain({ head: c.head, readable: [], writable });
      }),
    };
  }

  /**
   * A restored device, before its first process(): holds `chains` again
   * (the caller validated them: write-only, a header's room, outstanding on
   * the queue), or stays broken until the driver resets it.
   */
  restoreState(chains: readonly DescriptorChain[], broken: boolean): void {
    if (broken) {
      this.broken = true;
      return;
    }
    for (const c of chains) this.hold(c);
  }

  /**
   * Whether the held buffers may take the next packet. Without mergeable
   * buffers one chain is a packet's room. With them, the device wants room for
   * the largest packet, or as many segments as one read takes; failing that,
   * a ring whose every entry is held (the driver can give no more) is enough
   * too, or a small ring would wait forever.
   */
  private enough(): boolean {
    if (this.held.length === 0) return false;
    if (!this.opts.mergeable) return true;
    if (this.segments.length >= N.NET_RX_MAX_IOVECS) return true;
    return this.room >= N.NET_MAX_PACKET || this.held.length >= this.ctx.queue.size;
  }

  /** How many held segments one read fills: the first chain's, or (mergeable) all held ones', at most NET_RX_MAX_IOVECS. */
  private targetCount(): number {
    return Math.min(this.opts.mergeable ? this.segments.length : this.held[0]!.segmentCount, N.NET_RX_MAX_IOVECS);
  }

  /** The bytes the first `count` held segments hold (without a walk in the usual cases). */
  private roomOf(count: number): number {
    if (count === this.segments.length) return this.room;
    if (count === this.held[0]!.segmentCount) return this.held[0]!.capacity;
    let room = 0;
    for (let i = 0; i < count; i++) room += this.segments[i]!.len;
    return room;
  }

  /** Reads one packet into the held buffers; false when none is waiting (or the backend failed). */
  private readOne(): boolean {
    const count = this.targetCount();
    let n: number | null;
    try {
      n = this.backend.receive(this.iovecs, count);
    } catch (e) {
      this.backendFail((e as Error).message);
      return false;
    }
    if (n === null) return false;
    if (n === 0) {
      // End of file: nothing more will come (a tap never reads 0; a socket peer went away).
      this.backendFail('end of file');
      return false;
    }
    this.deliver(this.roomOf(count), n);
    return true;
  }

  /**
   * Returns the chains that `n` bytes filled, or drops the packet (the chains stay held).
   * `room`: the bytes of the segments the read was given (the first ones held).
   */
  private deliver(room: number, n: number): void {
    const { memory, queue } = this.ctx;
    // The packet is in the first `room` bytes of the held segments, so the whole list serves to reach it.
    const target = this.segments;
    if (n > room || n < N.VIRTIO_NET_HDR_SIZE) {
      this.drop(`packet of ${n} bytes, buffers of ${room}`);
      return;
    }
    readChainInto(memory, target, 0, this.header);
    const verdict = rxHeaderVerdict(this.header, this.opts.guest);
    if (verdict !== 'ok' && verdict !== 'clear-flags') {
      this.drop(verdict);
      return;
    }
    if (verdict === 'clear-flags') writeChain(memory, target, N.VIRTIO_NET_HDR_FLAGS, ZERO_BYTE);

    // Which chains the packet filled: in order, each to capacity, the last partly (§5.1.6.4).
    let used = 0;
    for (let left = n; left > 0; used++) left -= Math.min(this.held[used]!.capacity, left);
    this.numBuffers[0] = used & 0xff;
    this.numBuffers[1] = used >> 8;
    writeChain(memory, target, N.VIRTIO_NET_HDR_NUM_BUFFERS, this.numBuffers);

    let left = n;
    let segs = 0;
    for (const c of this.held.splice(0, used)) {
      const len = Math.min(c.capacity, left);
      queue.pushUsed(c.head, len);
      left -= len;
      segs += c.segmentCount;
      this.room -= c.capacity;
    }
    this.segments.splice(0, segs);
    this.iovecs.shift(segs);
    this.stats.packets++;
    this.stats.bytes += n;
  }

  private drop(why: string): void {
    this.stats.dropped++;
    this.dropLog.note('%s', why);
  }

  private watch(): void {
    if (this.watching) return;
    this.backend.watch(this.fds, (failed) => {
      if (failed) this.backendFail('error or hang-up on the backend fd');
      else this.process();
    });
    this.watching = true;
  }

  private unwatch(): void {
    if (!this.watching) return;
    this.backend.unwatch(this.fds);
    this.watching = false;
  }

  /** The backend cannot be read any more: stop watching it (a level-triggered error would spin the loop). */
  private backendFail(why: string): void {
    if (this.backendFailed) return;
    this.backendFailed = true;
    this.unwatch();
    debug('receive stopped: the backend failed: %s', why);
    try {
      this.interruptIfWanted();
    } catch (e) {
      this.fail(e);
    }
  }

  private interruptIfWanted(): void {
    if (this.ctx.queue.needsInterrupt()) this.ctx.signalUsed();
  }

  /** The ring is broken: stop watching the backend, then the one policy (queue/serve.ts): interrupt, DEVICE_NEEDS_RESET. */
  private fail(e: unknown): void {
    if (this.broken) return;
    this.broken = true;
    this.unwatch();
    queueBroken([this.ctx.queue], this.ctx, 'virtio-net receive queue', e);
  }
}

const ZERO_BYTE = new Uint8Array(1);
