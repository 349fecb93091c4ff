/**
 * The one queue-drain loop every virtio device runs on a queue notification,
 * and the one policy for a queue the driver broke.
 *
 * The loop pops chains and answers each, interrupts the driver when it asks
 * (once per queue's worth, and at the end), and yields through the device's
 * wakeup after a queue's worth of chains so one busy queue cannot hold the
 * I/O loop. A device decides what each chain means: a request it cannot make
 * sense of (a bad header, a short buffer) is the device's to answer with an
 * error status or a zero length.
 *
 * The policy: a chain the descriptor walker rejects (QueueError: a loop, a
 * buffer outside guest RAM, a bad index, …) is the driver breaking the queue,
 * not a request to refuse. virtio 1.2 §2.1.2: the device sets
 * DEVICE_NEEDS_RESET and sends a configuration change notification, then
 * stops serving until the driver resets it. The chain is not returned: the
 * device can no longer trust the ring. `queueBroken` is that policy, used by
 * `serveQueue` and by the devices that pop on their own schedule (net receive,
 * vsock receive and event queues).
 */
import { log } from '../../../lib/log.js';
import type { SplitQueue } from './split-queue.js';
import type { DescriptorChain } from './types.js';

const debug = log('virtio:queue');

/** What a drain needs of the device's activation context, for one queue. */
export interface QueueLink {
  readonly queue: SplitQueue;
  /** Raises the used-buffer interrupt. */
  signalUsed(): void;
  /** Sets DEVICE_NEEDS_RESET and raises the config-change interrupt (ActivationContext.needsReset). */
  needsReset(): void;
  /** Arms the device's wakeup so the I/O loop calls back on its next turn; without it, the queue is drained in one go. */
  wakeup?: (() => void) | undefined;
}

/**
 * The QueueLink of `queue` on a device's activation context (anything with
 * signalUsed/needsReset); `wakeup` (a backends/wakeup.ts Wakeup, or any
 * `arm()`) lets the drain yield.
 */
export function queueLink(ctx: Pick<QueueLink, 'signalUsed' | 'needsReset'>, queue: SplitQueue, wakeup?: { arm(): void }): QueueLink {
  return { queue, signalUsed: () => ctx.signalUsed(), needsReset: () => ctx.needsReset(), wakeup: wakeup ? () => wakeup.arm() : undefined };
}

/** How a drain ended: the ring is empty, the wakeup continues it, or the queue is broken (DEVICE_NEEDS_RESET is set). */
export type DrainResult = 'drained' | 'yielded' | 'broken';

/**
 * Serves `link.queue` until it is empty, or until `queue.size` chains were
 * served and the wakeup is armed to continue. `serve` answers one chain and
 * returns the number of bytes it wrote into the chain's writable buffers; the
 * chain then goes back through the used ring. Anything thrown (by pop() or by
 * `serve`) breaks the queue: `queueBroken` runs and 'broken' comes back, and
 * the caller must not serve this device again until the driver resets it.
 * Never throws.
 */
export function serveQueue(link: QueueLink, what: string, serve: (chain: DescriptorChain) => number): DrainResult {
  const { queue } = link;
  let done = 0;
  try {
    queue.disableNotifications();
    for (;;) {
      if (done > 0 && done % queue.size === 0) {
        // A queue's worth: let the driver reclaim those buffers, and let the loop serve the others.
        if (queue.needsInterrupt()) link.signalUsed();
        if (link.wakeup) {
          link.wakeup();
          return 'yielded';
        }
      }
      const chain = queue.pop();
      if (chain === null) {
        // §2.7.10: re-enable kicks, then look once more for buffers published meanwhile.
        if (!queue.enableNotifications()) break;
        queue.disableNotifications();
        continue;
      }
      queue.pushUsed(chain.head, serve(chain));
      done++;
    }
    if (queue.needsInterrupt()) link.signalUsed();
    return 'drained';
  } catch (e) {
    queueBroken([queue], link, what, e);
    return 'broken';
  }
}

/**
 * The driver broke a queue (QueueError, or a ring access that failed): tell
 * the driver about the chains already completed on `queues` (best effort:
 * the rings may be what broke), then set DEVICE_NEEDS_RESET with a
 * config-change interrupt (§2.1.2). The caller stops serving the device
 * until reset. Never throws.
 */
export function queueBroken(queues: readonly (SplitQueue | null)[], link: Pick<QueueLink, 'signalUsed' | 'needsReset'>, what: string, why: unknown): void {
  debug('%s: queue broken, device needs reset: %s', what, why instanceof Error ? why.message : String(why));
  let interrupt = false;
  for (const q of queues) {
    try {
      if (q?.needsInterrupt()) interrupt = true;
    } catch {
      // The rings are what broke; DEVICE_NEEDS_RESET below tells the driver anyway.
    }
  }
  if (interrupt) link.signalUsed();
  link.needsReset();
}
