/** The virtio-net kind: one NIC per `net[]` entry, on a host TAP opened (or created) on the main thread. */
import type { VirtioDevice } from '../device.js';
import { defineVirtioKind } from '../kind.js';
import { netInfo, type NetEntry } from './info.js';
export type { NetEntry } from './info.js';
import { createNetDevice, NetDevice, openTap, type NetDeviceParams } from './index.js';

export const netKind = defineVirtioKind<NetEntry, NetDeviceParams>({
  ...netInfo,
  open(n, place) {
    const tap = openTap(n, place.field);
    return { info: NetDevice.info({ mac: tap.params.mac }), params: { ...tap.params }, close: tap.close };
  },
  create: (params) => createNetDevice(params),
  /**
   * Snapshot: the receive chains held for the next packet, counters and
   * broken flags (net/snapshot.ts). The tap is not carried: the restored
   * config's entry is opened again by open() (the same tap name, or an
   * override's), and so is the config space, MAC included. A running Linux
   * driver keeps the MAC it read at probe, so a MAC override reaches the
   * guest's interface only at its next probe (reboot, driver rebind) or if
   * the guest sets it itself (`ip link set dev eth0 address ...`): clones on
   * one L2 segment otherwise share the snapshot's MAC.
   */
  saveState: (device) => asNet(device).saveState(),
  restoreState: (device, state, how) => asNet(device).restoreState(state, how.active),
});

function asNet(device: VirtioDevice): NetDevice {
  if (!(device instanceof NetDevice)) throw new TypeError('virtio-net snapshot hook called with another kind of device');
  return device;
}
