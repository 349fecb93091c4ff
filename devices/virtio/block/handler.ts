/**
 * virtio-blk queue processing (virtio 1.2 §5.2.6): pop chains, parse them
 * (request.ts), run them on the backend, write the status byte, return them
 * through the used ring, and interrupt the driver when it asks for it.
 *
 * I/O worker thread only. Nothing here throws because of guest data: a bad
 * request gets an IOERR/UNSUPP status, a chain without room for a status goes
 * back with length 0, and a broken queue (QueueError) makes the device ask for
 * DEVICE_NEEDS_RESET and stop.
 */
import { log } from '../../../lib/log.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { SplitQueue } from '../queue/split-queue.js';
import type { DescriptorChain } from '../queue/types.js';
import { writeChain } from '../queue/chain-io.js';
import { serveQueue } from '../queue/serve.js';
import type { BlockBackend } from './backend.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK } from './constants.js';
import { parseRequest, type BlockRequest, type DiskLimits } from './request.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';

const debug = log('virtio:block');

/** The part of the ActivationContext the handler uses. */
export interface BlockQueueContext {
  readonly memory: GuestMemory;
  readonly queue: SplitQueue;
  signalUsed(): void;
  needsReset(): void;
  /** Asks the I/O loop to call process() again soon (see backends/wakeup.ts). Without it, process() drains the queue in one go. */
  wakeup?(): void;
}

/** Counters, for tests and diagnostics. */
export interface BlockStats {
  /** Chains returned to the driver. */
  completed: number;
  /** Requests refused for the guest's mistakes (status IOERR/UNSUPP, or no status byte). */
  guestErrors: number;
  /** Requests whose host I/O failed (status IOERR). */
  ioErrors: number;
}

export class BlockHandler {
  readonly stats: BlockStats = { completed: 0, guestErrors: 0, ioErrors: 0 };
  private broken = false;
  private readonly guestLog = new RateLimitedLog(debug, 'guest error');
  private readonly ioLog = new RateLimitedLog(debug, 'I/O error');

  /** @param id the GET_ID answer: exactly 20 bytes (the serial, NUL-padded). */
  constructor(
    private readonly ctx: BlockQueueContext,
    private readonly backend: BlockBackend,
    private readonly disk: DiskLimits,
    private readonly id: Uint8Array,
  ) {}

  /** Whether the driver broke the queue (DEVICE_NEEDS_RESET is set): nothing is served until the driver resets the device. */
  get isBroken(): boolean {
    return this.broken;
  }

  /** A device restored from a snapshot whose queue was broken then: serve nothing until reset, as before. */
  markBroken(): void {
    this.broken = true;
  }

  /**
   * Handles the available requests: at most `queue.size` of them, then (with a
   * wakeup) yields to the I/O loop and continues on the next turn. Interrupts
   * the driver once per batch if it wants one. Never throws.
   */
  process(): void {
    if (this.broken) return;
    if (serveQueue(this.ctx, 'virtio-blk request queue', (chain) => this.complete(chain)) === 'broken') this.broken = true;
  }

  /** Runs one chain to completion; returns the bytes written into its writable buffers (status byte included). */
  private complete(chain: DescriptorChain): number {
    const { memory } = this.ctx;
    const parsed = parseRequest(memory, chain, this.disk);
    if (parsed.statusAddr === null) {
      this.stats.guestErrors++;
      this.guestLog.note('chain %d: %s; returned with length 0', chain.head, parsed.reason);
      this.stats.completed++;
      return 0;
    }
    const { status, written } = this.execute(chain.head, parsed.request);
    let used = 0;
    try {
      memory.writeU8(parsed.statusAddr, status);
      used = written + 1;
    } catch (e) {
      // Unreachable for chains SplitQueue validated; if it happens, claim nothing was written.
      this.guestLog.note('chain %d: status byte not writable: %s', chain.head, (e as Error).message);
    }
    this.stats.completed++;
    return used;
  }

  /** Does the request. Returns the status and the data bytes written into writable buffers (before the status byte). */
  private execute(head: number, req: BlockRequest): { status: number; written: number } {
    if (req.kind === 'reject') {
      this.stats.guestErrors++;
      this.guestLog.note('chain %d: %s (status %d)', head, req.reason, req.status);
      return { status: req.status, written: 0 };
    }
    const { memory } = this.ctx;
    try {
      switch (req.kind) {
        case 'read':
          this.backend.readv(req.offset, req.data, memory);
          return { status: VIRTIO_BLK_S_OK, written: req.length };
        case 'write':
          this.backend.writev(req.offset, req.data, memory);
          break;
        case 'flush':
          this.backend.flush();
          break;
        case 'get-id':
          return { status: VIRTIO_BLK_S_OK, written: writeChain(memory, req.data, 0, this.id) };
        case 'discard':
          for (const r of req.ranges) this.backend.discard(r.offset, r.length);
          break;
        case 'write-zeroes':
          for (const r of req.ranges) this.backend.writeZeroes(r.offset, r.length, r.unmap);
          break;
      }
      return { status: VIRTIO_BLK_S_OK, written: 0 };
    } catch (e) {
      this.stats.ioErrors++;
      this.ioLog.note('chain %d: %s failed: %s', head, req.kind, (e as Error).message);
      return { status: VIRTIO_BLK_S_IOERR, written: 0 };
    }
  }
}
