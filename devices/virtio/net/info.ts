/** What the registry knows of the net kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';

/** One `net[]` entry (the shape of lib/config.ts's NetConfig). */
export interface NetEntry {
  readonly tap: string;
  readonly mac?: string | undefined;
}

export const netInfo: VirtioKindInfo<NetEntry> = {
  name: 'virtio-net',
  configKey: 'net',
  describe: (n) => ({ tap: n.tap, ...(n.mac !== undefined ? { mac: n.mac } : {}) }),
};
