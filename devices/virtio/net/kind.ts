/** The virtio-net kind: one NIC per `net[]` entry, on a host TAP opened (or created) on the main thread. */
import { defineVirtioKind } from '../kind.js';
import { createNetDevice, NetDevice, openTap, type NetDeviceParams } from './index.js';

/** One `net[]` entry (the shape of lib/config.ts's NetConfig). */
export interface NetEntry {
  readonly tap: string;
  readonly mac?: string | undefined;
}

export const netKind = defineVirtioKind<NetEntry, NetDeviceParams>({
  name: 'virtio-net',
  configKey: 'net',
  open(n, place) {
    const tap = openTap(n, place.field);
    return { info: NetDevice.info({ mac: tap.params.mac }), params: { ...tap.params }, close: tap.close };
  },
  create: (params) => createNetDevice(params),
  describe: (n) => ({ tap: n.tap, ...(n.mac !== undefined ? { mac: n.mac } : {}) }),
});
