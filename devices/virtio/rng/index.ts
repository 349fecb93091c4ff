/** Building a virtio-rng device on the I/O worker: the device model wired to getrandom(2). */
import { EventfdWakeup } from '../backends/wakeup.js';
import { GetrandomSource } from './backend.js';
import { RngDevice } from './device.js';

export { RngDevice } from './device.js';

/** I/O worker: a RngDevice fed by the host's getrandom. */
export function createRngDevice(): RngDevice {
  return new RngDevice(new GetrandomSource(), new EventfdWakeup());
}
