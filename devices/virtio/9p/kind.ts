/** The virtio-9p kind: each `shares[]` entry with `protocol: '9p'`, served by the in-process 9P2000.L server. */
import { defineVirtioKind } from '../kind.js';
import type { ShareEntry } from '../backends/hostdir/index.js';
import { create9pDevice, openShareBackend, Virtio9pDevice, type Virtio9pParams } from './index.js';

export const p9Kind = defineVirtioKind<ShareEntry, Virtio9pParams>({
  name: 'virtio-9p',
  configKey: 'shares',
  accepts: (s) => s.protocol === '9p',
  open(s, place) {
    const share = openShareBackend(s, place.field);
    return { info: Virtio9pDevice.info({ tag: s.tag }), params: share.params, close: share.close };
  },
  create: (params) => create9pDevice(params),
  describe: (s) => ({ tag: s.tag, path: s.path, readOnly: s.readOnly ?? false, protocol: s.protocol }),
});
