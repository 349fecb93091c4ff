/**
 * The device registry: the one list of virtio device kinds a VM can have.
 * Everything that walks "every device of this VM" goes through it: the
 * builder opens each configured entry and wires it to a transport and the I/O
 * worker (lib/vm/builder.ts), the I/O worker builds the device models
 * (lib/vm/io-wiring.ts), `MicroVM.describe()` lists them, and snapshots ask
 * each for its state.
 *
 * A kind is defined in its device's folder (`devices/virtio/<kind>/kind.ts`,
 * contract in devices/virtio/kind.ts). Adding a kind is that folder and one
 * line in VIRTIO_KINDS. The order of VIRTIO_KINDS is the order of the
 * devices' transport slots (and so of the guest's probe order): keep new
 * kinds at the end, so existing guests see their devices where they were.
 */
import type { VirtioKind } from '../../devices/virtio/kind.js';
import { blockKind } from '../../devices/virtio/block/kind.js';
import { rngKind } from '../../devices/virtio/rng/kind.js';
import { netKind } from '../../devices/virtio/net/kind.js';
import { vsockKind } from '../../devices/virtio/vsock/kind.js';
import { p9Kind } from '../../devices/virtio/9p/kind.js';
import { fsKind } from '../../devices/virtio/fs/kind.js';

/** Every virtio kind, in slot order. */
// Each kind keeps its own Entry/Params types; the registry only routes entries to kinds, so it holds them as unknown.
export const VIRTIO_KINDS = [
  blockKind,
  rngKind,
  netKind,
  vsockKind,
  p9Kind,
  fsKind,
] as readonly VirtioKind<unknown, unknown>[] as readonly VirtioKind<unknown, unknown>[];

/** A kind by its stable name, or undefined. */
export function virtioKind(name: string): VirtioKind<unknown, unknown> | undefined {
  return VIRTIO_KINDS.find((k) => k.name === name);
}

/** One configured device: its kind, the user's entry and where it sits in the config. */
export interface ConfiguredDevice {
  readonly kind: VirtioKind<unknown, unknown>;
  readonly entry: unknown;
  /** `drives[1]`, `rng`, `shares[0]`...: the config path of the entry. */
  readonly field: string;
  /** Index within the kind's config key. */
  readonly index: number;
}

/**
 * The virtio devices `config` asks for, in slot order: config keys in the
 * order their first kind appears in VIRTIO_KINDS, and within a key each
 * element of its array (or the value itself: an object, or `true`) in config
 * order, given to the first kind of that key that `accept`s it (both share
 * protocols read `shares`, so mixed shares keep their config order).
 */
export function configuredDevices(config: object): ConfiguredDevice[] {
  const out: ConfiguredDevice[] = [];
  const cfg = config as Record<string, unknown>;
  const keys = [...new Set(VIRTIO_KINDS.map((k) => k.configKey))];
  for (const key of keys) {
    const value = cfg[key];
    if (value === undefined || value === null || value === false) continue;
    const kinds = VIRTIO_KINDS.filter((k) => k.configKey === key);
    const entries = Array.isArray(value) ? value.map((e, i) => ({ e, i, field: `${key}[${i}]` })) : [{ e: value, i: 0, field: key }];
    for (const { e, i, field } of entries) {
      const kind = kinds.find((k) => !k.accepts || k.accepts(e));
      // An entry no kind accepts (a share with an unknown protocol) was refused by config validation already.
      if (kind) out.push({ kind, entry: e, field, index: i });
    }
  }
  return out;
}

/** What `MicroVM.describe()` says of each virtio device: its kind, config path and the kind's own description. */
export function describeDevices(config: object): { kind: string; field: string; [key: string]: unknown }[] {
  return configuredDevices(config).map((d) => ({ kind: d.kind.name, field: d.field, ...d.kind.describe(d.entry) }));
}
