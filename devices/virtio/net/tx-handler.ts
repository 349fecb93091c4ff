/**
 * virtio-net transmit queue (virtio 1.2 §5.1.6.2): pop chains, check each
 * (packet.ts), hand the guest's segments (header included) to the backend in
 * one gather write, and return every chain with length 0 (the device writes
 * nothing into transmit buffers).
 *
 * I/O worker thread only. Nothing here throws because of guest data: a
 * packet that breaks the rules (packet.ts) is dropped and its chain returned,
 * a host error drops the packet, and a malformed descriptor chain or a broken
 * ring (QueueError) asks for DEVICE_NEEDS_RESET (queue/serve.ts's policy).
 */
import { log } from '../../../lib/log.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { SplitQueue } from '../queue/split-queue.js';
import type { DescriptorChain } from '../queue/types.js';
import { queueLink, serveQueue } from '../queue/serve.js';
import type { NetBackend, NetOffloads } from './backend.js';
import { txProblem } from './packet.js';
import { VIRTIO_NET_HDR_SIZE } from './constants.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';

const debug = log('virtio:net');

/** The part of the ActivationContext a queue handler uses. */
export interface NetQueueContext {
  readonly memory: GuestMemory;
  readonly queue: SplitQueue;
  signalUsed(): void;
  needsReset(): void;
}

/** Transmit counters (tests, diagnostics). */
export interface TxStats {
  /** Packets the backend accepted. */
  packets: number;
  /** Their bytes, vnet header included. */
  bytes: number;
  /** Chains dropped for the guest's mistakes. */
  malformed: number;
  /** Packets the host refused (HostError from the backend). */
  hostErrors: number;
}

export class TxHandler {
  readonly stats: TxStats = { packets: 0, bytes: 0, malformed: 0, hostErrors: 0 };
  private broken = false;
  private readonly guestLog = new RateLimitedLog(debug, 'tx: guest error');
  private readonly hostLog = new RateLimitedLog(debug, 'tx: host error');
  /** Where each packet's header is read to be checked. */
  private readonly header = new Uint8Array(VIRTIO_NET_HDR_SIZE);

  /**
   * @param host the offloads the driver may use on transmit (checked against every header)
   * @param wakeup asks the loop to call process() again soon; without it process() drains the ring in one go
   */
  constructor(
    private readonly ctx: NetQueueContext,
    private readonly backend: NetBackend,
    private readonly host: NetOffloads,
    private readonly wakeup?: () => void,
  ) {}

  /** Whether the driver broke the queue (DEVICE_NEEDS_RESET is set): nothing is sent until the driver resets the device. */
  get isBroken(): boolean {
    return this.broken;
  }

  /** A device restored from a snapshot whose transmit queue was broken then: send nothing until reset, as before. */
  markBroken(): void {
    this.broken = true;
  }

  /**
   * Sends the available packets: at most `queue.size` of them, then (with a
   * wakeup) yields to the loop and continues on the next turn. Interrupts the
   * driver once per batch if it wants one (§2.7.7). Never throws.
   */
  process(): void {
    if (this.broken) return;
    const link = { ...queueLink(this.ctx, this.ctx.queue), wakeup: this.wakeup };
    const result = serveQueue(link, 'virtio-net transmit queue', (chain) => {
      this.transmit(chain);
      return 0;
    });
    if (result === 'broken') this.broken = true;
  }

  private transmit(chain: DescriptorChain): void {
    const problem = txProblem(this.ctx.memory, chain, this.host, this.header);
    if (problem !== null) {
      this.stats.malformed++;
      this.guestLog.note('chain %d: %s; dropped', chain.head, problem);
      return;
    }
    try {
      this.backend.send(chain.readable, this.ctx.memory);
      this.stats.packets++;
      this.stats.bytes += chain.readableLength;
    } catch (e) {
      this.stats.hostErrors++;
      this.hostLog.note('chain %d: %s; dropped', chain.head, (e as Error).message);
    }
  }
}
