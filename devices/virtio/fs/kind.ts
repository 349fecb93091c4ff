/** The virtio-fs kind: each `shares[]` entry with `protocol: 'virtiofs'`, served in-process by the FUSE server (no daemon). */
import { defineVirtioKind } from '../kind.js';
import { fsInfo } from './info.js';
import type { ShareEntry } from '../backends/hostdir/index.js';
import type { VirtioDevice } from '../device.js';
import { HIPRIO_QUEUE, REQUEST_QUEUE } from './constants.js';
import { createFsDevice, openFsShareBackend, VirtioFsDevice, type VirtioFsParams } from './index.js';
import { restoreFuseState, saveFuseState } from './snapshot.js';

export const fsKind = defineVirtioKind<ShareEntry, VirtioFsParams>({
  ...fsInfo,
  open(s, place) {
    const share = openFsShareBackend(s, place.field);
    return { info: VirtioFsDevice.info({ tag: s.tag }), params: share.params, close: share.close };
  },
  create: (params) => createFsDevice(params),
  // The FUSE session: nodeids and handles, by path under the share root (snapshot.ts).
  saveState: (device) => saveFuseState(fsDevice(device).server),
  restoreState(device, state, how) {
    const d = fsDevice(device);
    restoreFuseState(d.server, state);
    // A drain that yielded at the snapshot left requests in the rings with kicks suppressed: continue it.
    if (how.active) {
      d.queueNotify(HIPRIO_QUEUE);
      d.queueNotify(REQUEST_QUEUE);
    }
  },
});

function fsDevice(device: VirtioDevice): VirtioFsDevice {
  if (!(device instanceof VirtioFsDevice)) throw new Error('virtio-fs: snapshot hook called with another kind of device');
  return device;
}
