/**
 * The device status state machine (virtio 1.2 §3.1.1) as a table: from each
 * status the driver may write only the listed next values. A reset (0) and
 * setting FAILED are always allowed and handled before the table.
 */
import {
  VIRTIO_STATUS_ACKNOWLEDGE as ACK, VIRTIO_STATUS_DRIVER as DRV, VIRTIO_STATUS_DRIVER_OK as OK,
  VIRTIO_STATUS_FEATURES_OK as FEAT, VIRTIO_STATUS_FAILED, VIRTIO_STATUS_DEVICE_NEEDS_RESET,
} from './constants.js';

export const STATUS_TRANSITIONS: ReadonlyMap<number, readonly number[]> = new Map([
  [0, [ACK]],
  [ACK, [ACK | DRV]],
  [ACK | DRV, [ACK | DRV | FEAT]],
  [ACK | DRV | FEAT, [ACK | DRV | FEAT | OK]],
  [ACK | DRV | FEAT | OK, []],
]);

export type StatusDecision =
  | { kind: 'reset' }
  | { kind: 'failed' }
  | { kind: 'set'; value: number; featuresOk: boolean; driverOk: boolean }
  | { kind: 'invalid' };

/**
 * Decides what a driver's write of `next` to the status register means when
 * the status is `current` (DEVICE_NEEDS_RESET, which only the device sets, is ignored on both sides).
 */
export function decideStatus(current: number, next: number): StatusDecision {
  if (next === 0) return { kind: 'reset' };
  if (next & VIRTIO_STATUS_FAILED) return { kind: 'failed' };
  const from = current & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
  const to = next & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
  if (to === from) return { kind: 'set', value: to, featuresOk: false, driverOk: false };
  const allowed = STATUS_TRANSITIONS.get(from);
  if (!allowed?.includes(to)) return { kind: 'invalid' };
  return { kind: 'set', value: to, featuresOk: (to & FEAT) !== 0 && (from & FEAT) === 0, driverOk: (to & OK) !== 0 && (from & OK) === 0 };
}
