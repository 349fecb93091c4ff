/** What the registry knows of the rng kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';

export const rngInfo: VirtioKindInfo<boolean> = {
  name: 'virtio-rng',
  configKey: 'rng',
  describe: () => ({}),
};
