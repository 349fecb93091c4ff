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
 * line in VIRTIO_KINDS (its light `info.ts` and how to load its `kind.ts`). The order of VIRTIO_KINDS is the order of the
 * devices' transport slots (and so of the guest's probe order): keep new
 * kinds at the end, so existing guests see their devices where they were.
 */
import type { VirtioKind, VirtioKindInfo } from '../../devices/virtio/kind.js';
import { blockInfo } from '../../devices/virtio/block/info.js';
import { rngInfo } from '../../devices/virtio/rng/info.js';
import { netInfo } from '../../devices/virtio/net/info.js';
import { vsockInfo } from '../../devices/virtio/vsock/info.js';
import { p9Info } from '../../devices/virtio/9p/info.js';
import { fsInfo } from '../../devices/virtio/fs/info.js';

type AnyKind = VirtioKind<unknown, unknown>;

/** A kind as the registry holds it: what it is (light), and how to load its device code. */
export interface KindSource {
  readonly info: VirtioKindInfo<unknown>;
  load(): Promise<AnyKind>;
}

const source = <E>(info: VirtioKindInfo<E>, load: () => Promise<unknown>): KindSource =>
  ({ info: info as VirtioKindInfo<unknown>, load: load as () => Promise<AnyKind> });

/**
 * Every virtio kind, in slot order. A kind's device code (its models, backends, protocol servers: most of
 * flintvm's modules) is imported only when a VM configures it: a VM without shares never loads 9P or FUSE,
 * which keeps a process's start-up and each I/O worker's short.
 */
export const VIRTIO_KINDS: readonly KindSource[] = [
  source(blockInfo, async () => (await import('../../devices/virtio/block/kind.js')).blockKind),
  source(rngInfo, async () => (await import('../../devices/virtio/rng/kind.js')).rngKind),
  source(netInfo, async () => (await import('../../devices/virtio/net/kind.js')).netKind),
  source(vsockInfo, async () => (await import('../../devices/virtio/vsock/kind.js')).vsockKind),
  source(p9Info, async () => (await import('../../devices/virtio/9p/kind.js')).p9Kind),
  source(fsInfo, async () => (await import('../../devices/virtio/fs/kind.js')).fsKind),
];

/**
 * The kinds loaded in this thread so far. Code, not VM state: like the module cache it mirrors, it is shared
 * by every VM of the thread and never shrinks.
 */
const loaded = new Map<string, AnyKind>();

/** Loads the device code of the kinds named (unknown names are an error). */
export async function loadVirtioKinds(names: Iterable<string>): Promise<void> {
  await Promise.all([...new Set(names)].filter((n) => !loaded.has(n)).map(async (n) => {
    const src = VIRTIO_KINDS.find((k) => k.info.name === n);
    if (!src) throw new Error(`unknown virtio device kind '${n}' (not in lib/vm/registry.ts)`);
    loaded.set(n, await src.load());
  }));
}

/** A loaded kind by its stable name; undefined when unknown or not loaded yet ({@link loadVirtioKinds}). */
export function virtioKind(name: string): AnyKind | undefined {
  return loaded.get(name);
}

/** One configured device: its kind, the user's entry and where it sits in the config. */
export interface ConfiguredDevice {
  readonly info: VirtioKindInfo<unknown>;
  /** The kind's device code: throws unless loaded ({@link loadConfiguredDevices}). */
  readonly kind: AnyKind;
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
  const infos = VIRTIO_KINDS.map((k) => k.info);
  const keys = [...new Set(infos.map((k) => k.configKey))];
  for (const key of keys) {
    const value = cfg[key];
    if (value === undefined || value === null || value === false) continue;
    const kinds = infos.filter((k) => k.configKey === key);
    const entries = Array.isArray(value) ? value.map((e, i) => ({ e, i, field: `${key}[${i}]` })) : [{ e: value, i: 0, field: key }];
    for (const { e, i, field } of entries) {
      const info = kinds.find((k) => !k.accepts || k.accepts(e));
      // An entry no kind accepts (a share with an unknown protocol) was refused by config validation already.
      if (!info) continue;
      out.push({
        info, entry: e, field, index: i,
        get kind(): AnyKind {
          const k = loaded.get(info.name);
          if (!k) throw new Error(`${field}: the ${info.name} device code is not loaded (loadConfiguredDevices first)`);
          return k;
        },
      });
    }
  }
  return out;
}

/** {@link configuredDevices}, with the device code of each kind they use loaded. */
export async function loadConfiguredDevices(config: object): Promise<ConfiguredDevice[]> {
  const devices = configuredDevices(config);
  await loadVirtioKinds(devices.map((d) => d.info.name));
  return devices;
}

/** What `MicroVM.describe()` says of each virtio device: its kind, config path and the kind's own description. */
export function describeDevices(config: object): { kind: string; field: string; [key: string]: unknown }[] {
  return configuredDevices(config).map((d) => ({ kind: d.info.name, field: d.field, ...d.info.describe(d.entry) }));
}
