/**
 * Building a virtio-net device on the I/O worker from structured-cloneable
 * params: the device model wired to its tap backend.
 */
import { TapBackend, type TapParams } from '../backends/tap.js';
import { EventfdWakeup } from '../backends/wakeup.js';
import { NetDevice, type NetDeviceOptions } from './device.js';

export { NetDevice, type NetDeviceOptions } from './device.js';
export { openTap, type OpenTap, type TapParams } from '../backends/tap.js';

/** What the main thread sends the I/O worker for one NIC: openTap's params, plus device options. */
export interface NetDeviceParams extends TapParams, Omit<NetDeviceOptions, 'mac'> {}

/** I/O worker: a NetDevice moving frames through the tap `params.tapFd` (not closed by the device). Throws RangeError for a bad MAC. */
export function createNetDevice(params: NetDeviceParams): NetDevice {
  const { tapFd, name: _name, ...options } = params;
  return new NetDevice(options, new TapBackend(tapFd), new EventfdWakeup());
}
