/** What the registry knows of the vsock kind without loading its device code (lib/vm/registry.ts): name, config key, description. */
import type { VirtioKindInfo } from '../kind.js';
import type { VsockSettings } from './index.js';

export const vsockInfo: VirtioKindInfo<VsockSettings> = {
  name: 'virtio-vsock',
  configKey: 'vsock',
  describe: (v) => ({ guestCid: v.guestCid, udsPath: v.udsPath }),
};
