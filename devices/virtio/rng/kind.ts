/** The virtio-rng kind: `rng: true` in the config gives the guest /dev/hwrng, fed by the host's getrandom(2). */
import { defineVirtioKind } from '../kind.js';
import { rngInfo } from './info.js';
import { createRngDevice, RngDevice } from './index.js';

export const rngKind = defineVirtioKind<boolean, Record<string, never>>({
  ...rngInfo,
  open: () => ({ info: RngDevice.info(), params: {}, close: () => undefined }),
  create: () => createRngDevice(),
  // Stateless: the entropy source is the host's, and the queues are the transport's.
  saveState: () => ({}),
  restoreState: () => undefined,
});
