/** What the registry knows of the block kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';

/** One `drives[]` entry (the shape of lib/config.ts's DriveConfig, which this layer does not import). */
export interface DriveEntry {
  readonly path: string;
  readonly readOnly: boolean;
  readonly root?: boolean;
  readonly serial?: string | undefined;
}

export const blockInfo: VirtioKindInfo<DriveEntry> = {
  name: 'virtio-blk',
  configKey: 'drives',
  describe: (d) => ({ path: d.path, readOnly: d.readOnly, root: d.root ?? false, ...(d.serial !== undefined ? { serial: d.serial } : {}) }),
};
