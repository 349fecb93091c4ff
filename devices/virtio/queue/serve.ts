/**
 * The drain loop most devices run on a queue notification: pop chains and
 * answer each, interrupt the driver when it asks, and yield through the
 * device's wakeup after a queue's worth of chains so one busy queue cannot
 * hold the I/O loop.
 */
import type { Wakeup } from '../backends/wakeup.js';
import type { SplitQueue } from './split-queue.js';
import type { DescriptorChain } from './types.js';

/**
 * Serves `queue` until it is empty, or until `queue.size` chains were served
 * and `wakeup` is armed to continue on the next loop turn. `serve` returns the
 * number of bytes it wrote into the chain's writable buffers. QueueError (and
 * whatever `serve` throws) propagates: the caller decides about DEVICE_NEEDS_RESET.
 */
export function serveQueue(queue: SplitQueue, signalUsed: () => void, wakeup: Wakeup | undefined, serve: (chain: DescriptorChain) => number): void {
  let done = 0;
  queue.disableNotifications();
  for (;;) {
    if (done > 0 && done % queue.size === 0) {
      if (queue.needsInterrupt()) signalUsed();
      if (wakeup) {
        wakeup.arm();
        return;
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
  if (queue.needsInterrupt()) signalUsed();
}
