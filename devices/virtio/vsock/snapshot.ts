/**
 * virtio-vsock across a snapshot (issue #15).
 *
 * Host sockets cannot be saved, so every connection ends at the snapshot:
 * the restored device starts with none and, when it was active, sends
 * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (virtio 1.2 §5.10.6.6) on the event
 * queue, at once or when the driver next adds an event buffer. Linux's
 * virtio_transport then resets every socket of the transport (connected ones
 * see ECONNRESET; listeners stay) and re-reads guest_cid from the config
 * space, which is the restored config's: a clone given another CID by an
 * override answers on it from then on.
 *
 * What survives, besides the transport and queue positions:
 * - the rx chain the device popped and did not fill (`spareRx`): carried
 *   (queue/saved-chain.ts) and used first by the restored device, so the
 *   driver's buffer is neither lost nor returned empty;
 * - the next host port for host-initiated connections (ports keep
 *   increasing, so a port the guest saw before is not handed out at once);
 * - whether the driver broke the rings (DEVICE_NEEDS_RESET is set; the
 *   restored device stays stopped and sends no event);
 * - the counters.
 * The listening socket is re-created by the kind's open() from the restored
 * config (the saved udsPath, or an override's).
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { SnapshotStateError } from '../../../lib/errors.js';
import { intIn, object } from '../../../lib/kvm/state-json.js';
import { bool, counters, outstanding, restoreChains, saveChain, type SavedChain } from '../queue/saved-chain.js';
import type { SplitQueue } from '../queue/split-queue.js';
import type { DescriptorChain } from '../queue/types.js';
import * as V from './constants.js';
import { newVsockStats, type VsockStats } from './streams.js';

/** What the muxer hands over and takes back (validated). */
export interface MuxerState {
  readonly spareRx: DescriptorChain | null;
  readonly nextPort: number;
  readonly broken: boolean;
}

/** The device's saved state (JSON-able); `muxer` is null when the device was not active. */
export interface VsockState {
  readonly muxer: {
    readonly broken: boolean;
    /** The held rx chain: none or one. */
    readonly spareRx: readonly SavedChain[];
    readonly nextPort: number;
    readonly stats: VsockStats;
  } | null;
}

/** The restored device's queues, when it was active (the event queue is optional). */
export interface VsockRestoreQueues {
  readonly memory: GuestMemory;
  readonly rx: SplitQueue;
  readonly tx: SplitQueue;
  readonly event: SplitQueue | null;
}

const STAT_KEYS = Object.keys(newVsockStats()) as (keyof VsockStats)[];

/** The JSON-able state of an active muxer's `saveState()` and counters. */
export function vsockState(m: MuxerState, stats: VsockStats): VsockState {
  return { muxer: { broken: m.broken, spareRx: m.spareRx ? [saveChain(m.spareRx)] : [], nextPort: m.nextPort, stats: { ...stats } } };
}

/**
 * Reads a saved VsockState back for a device activated on `queues` (null: it
 * was not active). Throws SnapshotStateError naming the field: a wrong shape,
 * a host port outside the ephemeral range, more than one held rx chain, one
 * that is not guest RAM or has no room for a header, a count that is not the
 * rx queue's outstanding chains, or tx/event chains outstanding (the device
 * holds none there).
 */
export function parseVsockState(value: unknown, queues: VsockRestoreQueues | null): { muxer: MuxerState; stats: VsockStats } | null {
  const o = object('state', value);
  if (!queues) {
    if (o.muxer !== null) throw new SnapshotStateError('muxer', 'must be null for a device that was not active', o.muxer);
    return null;
  }
  const m = object('muxer', o.muxer);
  const broken = bool('muxer.broken', m.broken);
  const nextPort = intIn('muxer.nextPort', m.nextPort, V.VSOCK_FIRST_EPHEMERAL_PORT, V.VSOCK_MAX_PORT - 1);
  // A broken ring is not served again, and its outstanding counts mean nothing (a bad head is consumed, never returned).
  const spare = broken ? restoreChains('muxer.spareRx', m.spareRx, null, null) : restoreChains('muxer.spareRx', m.spareRx, queues.rx, queues.memory);
  if (spare.length > 1) throw new SnapshotStateError('muxer.spareRx', `holds ${spare.length} chains; the device holds at most one`, spare.length);
  const chain = spare[0] ?? null;
  if (chain && chain.writableLength < V.VSOCK_HDR_SIZE) {
    throw new SnapshotStateError('muxer.spareRx[0]', `has ${chain.writableLength} writable bytes, less than a ${V.VSOCK_HDR_SIZE}-byte header`, chain.writableLength);
  }
  if (!broken) {
    for (const [name, q] of [['tx', queues.tx], ['event', queues.event]] as const) {
      if (q && outstanding(q) !== 0) throw new SnapshotStateError('muxer.broken', `is false, but the ${name} queue has ${outstanding(q)} chains outstanding (the device holds none there)`, broken);
    }
  }
  return { muxer: { spareRx: chain, nextPort, broken }, stats: counters('muxer.stats', m.stats, STAT_KEYS) };
}
