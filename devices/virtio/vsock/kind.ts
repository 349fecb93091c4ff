/** The virtio-vsock kind: `vsock: { guestCid, udsPath }`, Firecracker-style hybrid vsock over a Unix socket. */
import type { VirtioDevice } from '../device.js';
import { defineVirtioKind } from '../kind.js';
import { vsockInfo } from './info.js';
import { createVsockDevice, openVsockBackend, VsockDevice, type VsockDeviceParams, type VsockSettings } from './index.js';

export const vsockKind = defineVirtioKind<VsockSettings, VsockDeviceParams>({
  ...vsockInfo,
  open(v, place) {
    const backend = openVsockBackend(v, place.field);
    return { info: VsockDevice.info(backend.params), params: backend.params, close: backend.close };
  },
  create: (params) => createVsockDevice(params),
  /**
   * Snapshot: every connection ends (host sockets cannot be saved); a
   * restored active device sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, on which
   * Linux resets its sockets and re-reads guest_cid (the restored config's:
   * an override's CID takes effect there). The listener is re-created by
   * open() at the restored udsPath. State: vsock/snapshot.ts.
   */
  saveState: (device) => asVsock(device).saveState(),
  restoreState: (device, state, how) => asVsock(device).restoreState(state, how.active),
});

function asVsock(device: VirtioDevice): VsockDevice {
  if (!(device instanceof VsockDevice)) throw new TypeError('virtio-vsock snapshot hook called with another kind of device');
  return device;
}
