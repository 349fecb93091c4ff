/**
 * virtio-blk across a snapshot (issue #15): what the device keeps beyond the
 * transport and its queue position, and the checks that read it back.
 *
 * Little survives: every request completes within the loop turn that popped
 * it (the backend is synchronous, including FLUSH), so at a snapshot no chain
 * is held and nothing is in flight. The state is the handler's counters and
 * whether the driver had broken the queue (the transport then shows
 * DEVICE_NEEDS_RESET, and the restored device must go on serving nothing
 * until the driver resets it). No fd: the image is re-opened by the kind's
 * `open()` from the restored config (an override may name a copy).
 *
 * Requests the driver published after the device's last drain (a yielded
 * batch, a kick not yet seen) are still in the ring; the restored transport
 * polls every queue once, which serves them.
 */
import { SnapshotStateError } from '../../../lib/errors.js';
import { object } from '../../../lib/kvm/state-json.js';
import { bool, counters } from '../queue/saved-chain.js';
import type { BlockStats } from './handler.js';

/** The device's saved state (JSON-able). */
export interface BlockState {
  /** The driver broke the request queue before the snapshot (only while active). */
  readonly broken: boolean;
  /** The handler's counters; null when the device was not active. */
  readonly stats: BlockStats | null;
}

const STAT_KEYS = ['completed', 'guestErrors', 'ioErrors'] as const satisfies readonly (keyof BlockStats)[];

/**
 * Reads a saved BlockState back. Throws SnapshotStateError naming the field
 * for anything but the shape saveState writes: an object with a boolean
 * `broken` and `stats` of non-negative safe integers (null exactly when the
 * device was not active).
 */
export function parseBlockState(value: unknown, active: boolean): BlockState {
  const o = object('state', value);
  const broken = bool('broken', o.broken);
  if (!active) {
    if (o.stats !== null) throw new SnapshotStateError('stats', 'must be null for a device that was not active', o.stats);
    if (broken) throw new SnapshotStateError('broken', 'must be false for a device that was not active', broken);
    return { broken, stats: null };
  }
  return { broken, stats: counters('stats', o.stats, STAT_KEYS) };
}
