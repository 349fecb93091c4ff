/**
 * virtio-net across a snapshot (issue #15): what the device keeps beyond the
 * transport and its queue positions, and the checks that read it back.
 *
 * - Transmit completes every chain in the turn that popped it (the tap takes
 *   a packet in one writev or it is dropped), so nothing is in flight there.
 * - Receive holds popped chains across turns, waiting for a packet (the
 *   device cannot learn a packet's size before reading it, rx-handler.ts).
 *   Those chains are carried (queue/saved-chain.ts) and held again by the
 *   restored device; no packet is ever half delivered (one readv per packet).
 * - Counters, and whether the driver broke a queue (the transport then shows
 *   DEVICE_NEEDS_RESET; the restored device goes on refusing to serve it).
 *
 * Not carried: the tap (the restored config's, re-opened or overridden, by
 * the kind's open()), the MAC and link status (the restored transport's
 * config space is the fresh one open() made; a running Linux driver keeps
 * the MAC it read at probe), the backend-failed flag (a new tap works).
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { SnapshotStateError } from '../../../lib/errors.js';
import { object } from '../../../lib/kvm/state-json.js';
import { bool, counters, outstanding, restoreChains, type SavedChain } from '../queue/saved-chain.js';
import type { SplitQueue } from '../queue/split-queue.js';
import type { DescriptorChain } from '../queue/types.js';
import { VIRTIO_NET_HDR_SIZE } from './constants.js';
import type { RxStats } from './rx-handler.js';
import type { TxStats } from './tx-handler.js';

/** The device's saved state (JSON-able); both halves null when the device was not active. */
export interface NetState {
  readonly rx: { readonly broken: boolean; readonly held: readonly SavedChain[]; readonly stats: RxStats } | null;
  readonly tx: { readonly broken: boolean; readonly stats: TxStats } | null;
}

/** A NetState read back: the held chains as chains again. */
export interface RestoredNetState {
  readonly rx: { readonly broken: boolean; readonly held: readonly DescriptorChain[]; readonly stats: RxStats } | null;
  readonly tx: { readonly broken: boolean; readonly stats: TxStats } | null;
}

/** The restored device's queues, when it was active. */
export interface NetRestoreQueues {
  readonly memory: GuestMemory;
  readonly rx: SplitQueue;
  readonly tx: SplitQueue;
}

const RX_KEYS = ['packets', 'bytes', 'dropped', 'malformed', 'pauses'] as const satisfies readonly (keyof RxStats)[];
const TX_KEYS = ['packets', 'bytes', 'malformed', 'hostErrors'] as const satisfies readonly (keyof TxStats)[];

/**
 * Reads a saved NetState back for a device activated on `queues` (null: it
 * was not active). Throws SnapshotStateError naming the field: a wrong shape,
 * counters that are not non-negative safe integers, held chains that are not
 * guest RAM, not write-only with a header's room, or not exactly the receive
 * queue's outstanding chains, or a transmit queue with chains outstanding.
 */
export function parseNetState(value: unknown, queues: NetRestoreQueues | null): RestoredNetState {
  const o = object('state', value);
  if (!queues) {
    for (const k of ['rx', 'tx'] as const) if (o[k] !== null) throw new SnapshotStateError(k, 'must be null for a device that was not active', o[k]);
    return { rx: null, tx: null };
  }
  const rxo = object('rx', o.rx);
  const rxBroken = bool('rx.broken', rxo.broken);
  // A broken ring is not served again, and its outstanding count means nothing (a bad head is consumed, never returned).
  const held = rxBroken ? restoreChains('rx.held', rxo.held, null, null) : restoreChains('rx.held', rxo.held, queues.rx, queues.memory);
  held.forEach((c, i) => {
    if (c.readable.length > 0 || c.writableLength < VIRTIO_NET_HDR_SIZE) {
      throw new SnapshotStateError(`rx.held[${i}]`, `a receive buffer is write-only with at least ${VIRTIO_NET_HDR_SIZE} bytes (has ${c.readableLength} readable, ${c.writableLength} writable)`);
    }
  });
  const txo = object('tx', o.tx);
  const txBroken = bool('tx.broken', txo.broken);
  if (!txBroken && outstanding(queues.tx) !== 0) {
    throw new SnapshotStateError('tx.broken', `is false, but the transmit queue has ${outstanding(queues.tx)} chains outstanding (the device holds none between loop turns)`, txBroken);
  }
  return {
    rx: { broken: rxBroken, held, stats: counters('rx.stats', rxo.stats, RX_KEYS) },
    tx: { broken: txBroken, stats: counters('tx.stats', txo.stats, TX_KEYS) },
  };
}
