/** The virtio-9p kind: each `shares[]` entry with `protocol: '9p'`, served by the in-process 9P2000.L server. */
import { defineVirtioKind } from '../kind.js';
import { p9Info } from './info.js';
import type { ShareEntry } from '../backends/hostdir/index.js';
import type { VirtioDevice } from '../device.js';
import { create9pDevice, openShareBackend, Virtio9pDevice, type Virtio9pParams } from './index.js';
import { restoreP9State, saveP9State } from './snapshot.js';

export const p9Kind = defineVirtioKind<ShareEntry, Virtio9pParams>({
  ...p9Info,
  open(s, place) {
    const share = openShareBackend(s, place.field);
    return { info: Virtio9pDevice.info({ tag: s.tag }), params: share.params, close: share.close };
  },
  create: (params) => create9pDevice(params),
  // The 9P session: msize and every fid, by path under the share root (snapshot.ts).
  saveState: (device) => saveP9State(p9Device(device).server),
  restoreState(device, state, how) {
    const d = p9Device(device);
    restoreP9State(d.server, state);
    // A drain that yielded at the snapshot left requests in the ring with kicks suppressed: continue it.
    if (how.active) d.queueNotify(0);
  },
});

function p9Device(device: VirtioDevice): Virtio9pDevice {
  if (!(device instanceof Virtio9pDevice)) throw new Error('virtio-9p: snapshot hook called with another kind of device');
  return device;
}
