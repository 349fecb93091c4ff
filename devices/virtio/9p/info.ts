/** What the registry knows of the 9p kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';
import type { ShareEntry } from '../backends/hostdir/index.js';

export const p9Info: VirtioKindInfo<ShareEntry> = {
  name: 'virtio-9p',
  configKey: 'shares',
  accepts: (s) => s.protocol === '9p',
  describe: (s) => ({ tag: s.tag, path: s.path, readOnly: s.readOnly ?? false, protocol: s.protocol }),
};
