/** The virtio-blk kind: one device per `drives[]` entry, on a raw image opened (and locked) on the main thread. */
import type { VirtioDevice } from '../device.js';
import { defineVirtioKind } from '../kind.js';
import { blockInfo, type DriveEntry } from './info.js';
export type { DriveEntry } from './info.js';
import { BlockDevice, createBlockDevice, openDiskImage, type BlockDeviceParams } from './index.js';

export const blockKind = defineVirtioKind<DriveEntry, BlockDeviceParams>({
  ...blockInfo,
  open(d, place) {
    const img = openDiskImage(d.path, { readOnly: d.readOnly, field: `${place.field}.path` });
    const options = { sizeBytes: img.sizeBytes, readOnly: d.readOnly, serial: d.serial };
    // Drives are probed in command-line order, so drive i is /dev/vd<a+i>.
    const cmdline = d.root ? [`root=/dev/vd${String.fromCharCode(0x61 /* 'a' */ + place.index)}`, d.readOnly ? 'ro' : 'rw'] : [];
    return { info: BlockDevice.info(options), params: { fd: img.fd, ...options }, close: img.close, cmdline };
  },
  create: (params) => createBlockDevice(params),
  /**
   * Snapshot: the counters and a broken-queue flag (block/snapshot.ts).
   * saveState first fdatasyncs a writable image, so the disk file and the
   * memory file of a snapshot are a consistent pair (every write the guest
   * saw complete is in the file). A copy of the disk for a clone must be
   * taken after that and before the original VM resumes. The image is
   * re-opened by open() from the restored config (an override may name a
   * copy), never carried as an fd.
   */
  saveState: (device) => asBlock(device).saveState(),
  restoreState: (device, state, how) => asBlock(device).restoreState(state, how.active),
});

function asBlock(device: VirtioDevice): BlockDevice {
  if (!(device instanceof BlockDevice)) throw new TypeError('virtio-blk snapshot hook called with another kind of device');
  return device;
}
