/** The virtio-vsock kind: `vsock: { guestCid, udsPath }`, Firecracker-style hybrid vsock over a Unix socket. */
import { defineVirtioKind } from '../kind.js';
import { createVsockDevice, openVsockBackend, VsockDevice, type VsockDeviceParams, type VsockSettings } from './index.js';

export const vsockKind = defineVirtioKind<VsockSettings, VsockDeviceParams>({
  name: 'virtio-vsock',
  configKey: 'vsock',
  open(v, place) {
    const backend = openVsockBackend(v, place.field);
    return { info: VsockDevice.info(backend.params), params: backend.params, close: backend.close };
  },
  create: (params) => createVsockDevice(params),
  describe: (v) => ({ guestCid: v.guestCid, udsPath: v.udsPath }),
});
