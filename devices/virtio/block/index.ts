/**
 * Building a virtio-blk device on the I/O worker from structured-cloneable
 * params: the device model wired to its file backend.
 */
import { FileBackend } from '../backends/file.js';
import { EventfdWakeup } from '../backends/wakeup.js';
import { BlockDevice, type BlockDeviceOptions } from './device.js';

export { BlockDevice, type BlockDeviceOptions } from './device.js';
export { openDiskImage, type DiskImage } from '../backends/file.js';

/** What the main thread sends the I/O worker for one disk: an fd from openDiskImage, and the disk's shape. */
export interface BlockDeviceParams extends BlockDeviceOptions {
  /** Open fd of the image (process-wide number). Not closed by the device. */
  readonly fd: number;
}

/** I/O worker: a BlockDevice doing zero-copy file I/O on `params.fd`. */
export function createBlockDevice(params: BlockDeviceParams): BlockDevice {
  const { fd, ...options } = params;
  return new BlockDevice(options, new FileBackend(fd), new EventfdWakeup());
}
