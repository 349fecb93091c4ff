/**
 * virtio-net transmit queue (virtio 1.2 §5.1.6.2): pop chains, check each
 * (packet.ts), hand the guest's segments (header included) to the backend in
 * one gather write, and return every chain with length 0 (the device writes
 * nothing into transmit buffers).
 *
 * I/O worker thread only. Nothing here throws because of guest data: a
 * malformed chain is dropped and returned, a host error drops the packet,
 * and a broken ring (QueueError without a head) asks for DEVICE_NEEDS_RESET.
 */
import { log } from '../../../lib/log.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { SplitQueue } from '../queue/split-queue.js';
import { QueueError, type DescriptorChain } from '../queue/types.js';
import type { NetBackend, NetOffloads } from './backend.js';
import { txProblem } from './packet.js';
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

  /**
   * Sends the available packets: at most `queue.size` of them, then (with a
   * wakeup) yields to the loop and continues on the next turn. Interrupts the
   * driver once per batch if it wants one (§2.7.7). Never throws.
   */
  process(): void {
    if (this.broken) return;
    const { queue } = this.ctx;
    let done = 0;
    try {
      queue.disableNotifications();
      for (;;) {
        if (done > 0 && done % queue.size === 0 && this.wakeup) {
          // A queue's worth: let the driver reclaim those buffers, and let the loop serve the others.
          this.interruptIfWanted();
          this.wakeup();
          return;
        }
        const chain = this.pop();
        if (chain === undefined) {
          done++;
          continue;
        }
        if (chain === null) {
          // §2.7.10: re-enable kicks, then look once more for buffers published meanwhile.
          if (!queue.enableNotifications()) break;
          queue.disableNotifications();
          continue;
        }
        this.transmit(chain);
        queue.pushUsed(chain.head, 0);
        done++;
      }
      this.interruptIfWanted();
    } catch (e) {
      this.fail(e);
    }
  }

  /** The next chain; undefined for a malformed one already returned to the driver; null when the ring is empty. */
  private pop(): DescriptorChain | null | undefined {
    try {
      return this.ctx.queue.pop();
    } catch (e) {
      // A chain-level error (bad buffer address, loop, …) consumed a valid head: give it back and go on.
      if (!(e instanceof QueueError) || e.head === undefined) throw e;
      this.stats.malformed++;
      this.guestLog.note('chain %d: %s; returned unsent', e.head, e.message);
      this.ctx.queue.pushUsed(e.head, 0);
      return undefined;
    }
  }

  private transmit(chain: DescriptorChain): void {
    const problem = txProblem(this.ctx.memory, chain, this.host);
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

  private interruptIfWanted(): void {
    if (this.ctx.queue.needsInterrupt()) this.ctx.signalUsed();
  }

  /** The ring itself is broken: interrupt for what completed, then stop until reset. */
  private fail(e: unknown): void {
    this.broken = true;
    debug('transmit queue broken, device needs reset: %s', (e as Error).message);
    try {
      this.interruptIfWanted();
    } catch {
      // The rings are what broke; DEVICE_NEEDS_RESET tells the driver anyway.
    }
    this.ctx.needsReset();
  }
}
