/** What the registry knows of the fs kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';
import type { ShareEntry } from '../backends/hostdir/index.js';

export const fsInfo: VirtioKindInfo<ShareEntry> = {
  name: 'virtio-fs',
  configKey: 'shares',
  accepts: (s) => s.protocol === 'virtiofs',
  describe: (s) => ({ tag: s.tag, path: s.path, readOnly: s.readOnly ?? false, protocol: s.protocol }),
};
