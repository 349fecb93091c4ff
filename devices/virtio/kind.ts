/**
 * The contract of a virtio device kind: everything the VM's composition root
 * (lib/vm/registry.ts) needs to know about one kind of virtio device, so that
 * building, wiring, describing, snapshotting and tearing down a VM can walk
 * one list instead of naming each device. A kind lives in its device's folder
 * (`devices/virtio/<kind>/kind.ts`); adding a kind is that folder plus one
 * line in the registry.
 *
 * The two halves run on different threads:
 * - `open` runs on the main thread: it validates the user's entry, opens the
 *   host resources (a disk image, a tap, a share root, a socket) and returns
 *   structured-cloneable `params` plus the `close` for after the VM stopped;
 * - `create` runs on the I/O worker: it builds the device model from `params`.
 */
import type { VirtioDevice, VirtioDeviceInfo } from './device.js';

/** One opened device of a kind, on the main thread. */
export interface OpenedVirtio<Params> {
  /** What the transport shows the guest (device id, features, config space, queue sizes). */
  readonly info: VirtioDeviceInfo;
  /** Sent to the I/O worker; must survive structured cloning (numbers, strings, plain objects). */
  readonly params: Params;
  /** Releases the host resources; called once, after the I/O worker has stopped (or on a failed build). Idempotent. */
  close(): void;
  /** Kernel command-line parameters this device adds (e.g. `root=/dev/vda rw` for a root disk). */
  readonly cmdline?: readonly string[];
}

/** Where an entry sits, for messages and for kinds whose guest name depends on order. */
export interface EntryPlace {
  /** The config path of the entry, e.g. `drives[1]` or `rng`: every ConfigError names it. */
  readonly field: string;
  /** The entry's index within its kind (0 for a kind configured by a single value). */
  readonly index: number;
  /** The index of this device among all virtio devices of the VM (its transport slot). */
  readonly slot: number;
}

/**
 * What the registry knows of a kind without loading its device code (`devices/virtio/<kind>/info.ts`): a VM
 * loads the code of the kinds it configures only (lib/vm/registry.ts).
 */
export interface VirtioKindInfo<Entry = unknown> {
  /** Stable name, used in the wiring params, in `describe()` and in snapshots: 'virtio-blk', 'virtio-rng'... */
  readonly name: string;
  /**
   * The MicroVMConfig key that configures this kind. An array value is one
   * device per element; `true` or an object is one device; absent, `false`
   * and `undefined` are none. `accepts` narrows a shared key (both share
   * protocols read `shares`).
   */
  readonly configKey: string;
  accepts?(entry: Entry): boolean;
  /** A JSON-able description of the entry for APIs (no fds, no secrets). */
  describe(entry: Entry): Record<string, unknown>;
}

/**
 * A kind of virtio device. `Entry` is one element of the config key the kind
 * reads (one drive, one NIC, the vsock object...), `Params` what crosses to
 * the I/O worker.
 */
export interface VirtioKind<Entry = unknown, Params = unknown> extends VirtioKindInfo<Entry> {
  /** Main thread: validate `entry` and open its host resources. Throws ConfigError naming `place.field`; leaves nothing open when it throws. */
  open(entry: Entry, place: EntryPlace): OpenedVirtio<Params>;
  /** I/O worker: the device model for `params`. */
  create(params: Params): VirtioDevice;
  /**
   * Snapshot hooks; a kind without them cannot be snapshotted yet, and
   * `snapshot()` refuses a VM that has one, naming it, before writing anything.
   *
   * `saveState` runs on the I/O worker between two turns of its loop, with
   * every vCPU paused: no request is being served. It returns the device's own
   * state as JSON-able data (numbers, strings, booleans, arrays, plain objects;
   * no bigints, no fds, no buffers: encode bytes as base64). The transport
   * (status, features, queue addresses, config space) and each queue's ring
   * indexes are saved by the transport, not here. A device must not hold a
   * chain it popped without returning it at this point; if it ever does, its
   * state must carry it.
   *
   * `restoreState` runs on the I/O worker of the restored VM, right after
   * `create(params)` (params from `open` of the entry in the restored config,
   * which may carry new host resources: another tap, socket path or disk file)
   * and, when the device was active at the snapshot (`how.active`), after
   * `activate(ctx)` with its queues at their saved indexes. `state` comes from
   * a file: validate it (types, ranges, table sizes within the device's
   * bounds) and throw an Error naming the bad field rather than trust it. It
   * may talk to the driver through the activation context (vsock sends its
   * transport-reset event here).
   */
  saveState?(device: VirtioDevice): unknown;
  restoreState?(device: VirtioDevice, state: unknown, how: { readonly active: boolean }): void;
}

/** Identity helper that keeps a kind's `Entry`/`Params` types while checking it against the contract. */
export function defineVirtioKind<Entry, Params>(kind: VirtioKind<Entry, Params>): VirtioKind<Entry, Params> {
  return kind;
}
