/** The virtio-fs kind: each `shares[]` entry with `protocol: 'virtiofs'`, served in-process by the FUSE server (no daemon). */
import { defineVirtioKind } from '../kind.js';
import type { ShareEntry } from '../backends/hostdir/index.js';
import { createFsDevice, openFsShareBackend, VirtioFsDevice, type VirtioFsParams } from './index.js';

export const fsKind = defineVirtioKind<ShareEntry, VirtioFsParams>({
  name: 'virtio-fs',
  configKey: 'shares',
  accepts: (s) => s.protocol === 'virtiofs',
  open(s, place) {
    const share = openFsShareBackend(s, place.field);
    return { info: VirtioFsDevice.info({ tag: s.tag }), params: share.params, close: share.close };
  },
  create: (params) => createFsDevice(params),
  describe: (s) => ({ tag: s.tag, path: s.path, readOnly: s.readOnly ?? false, protocol: s.protocol }),
});
