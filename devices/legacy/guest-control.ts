/**
 * flintvm's guest-to-VMM signal ports: how the guest's init tells the VMM that
 * it has started and how its command ended. Two one-byte write-only ports:
 * - offset {@link GUEST_CONTROL_BOOT_TIMER} (port 0x600): writing
 *   {@link GUEST_BOOT_COMPLETE_MAGIC} means "guest init reached" (the same
 *   magic value as Firecracker's boot-timer device);
 * - offset {@link GUEST_CONTROL_EXIT_STATUS} (port 0x601): the byte written is
 *   the exit status of the guest's command.
 * Reads return 0. Any other access is ignored and logged once per instance.
 * There is no shared state: the device only forwards to its callbacks.
 */
import type { BusDevice } from '../../lib/bus/device.js';
import { log } from '../../lib/log.js';

const debug = log('legacy:guest-control');

/** Offset of the boot-timer port (0x600) from the device base. */
export const GUEST_CONTROL_BOOT_TIMER = 0;
/** Offset of the exit-status port (0x601) from the device base. */
export const GUEST_CONTROL_EXIT_STATUS = 1;
/** Ports the device spans. */
export const GUEST_CONTROL_PORT_COUNT = 2;
/** The byte that signals "guest init reached" on the boot-timer port. */
export const GUEST_BOOT_COMPLETE_MAGIC = 123;

const BYTE = 1;
const ODD_ACCESS = 1;
const ODD_BOOT_VALUE = 2;

/**
 * Callbacks of a {@link GuestControl}. Both run synchronously on the vCPU
 * worker thread that took the port write, inside its exit handling: keep them
 * short and non-blocking (post a message, write a shared word). An exception
 * they throw propagates to the caller of `write`.
 */
export interface GuestControlOptions {
  /** The guest's init is running. Called on every magic write (normally one). */
  onBootTimer: () => void;
  /** The guest's command finished with `status` (0-255). */
  onExitStatus: (status: number) => void;
}

/** The guest-control device: a {@link BusDevice} over 2 ports. Create one per vCPU worker. */
export class GuestControl implements BusDevice {
  private readonly onBootTimer: () => void;
  private readonly onExitStatus: (status: number) => void;
  private warned = 0;

  constructor(options: GuestControlOptions) {
    this.onBootTimer = options.onBootTimer;
    this.onExitStatus = options.onExitStatus;
  }

  /** Reads return 0: the ports are write-only. */
  read(_offset: number, _size: number): number {
    return 0;
  }

  /** A one-byte write to offset 0 (with the magic) or 1 signals the VMM; anything else is ignored. */
  write(offset: number, size: number, value: number): void {
    if (size !== BYTE || (offset !== GUEST_CONTROL_BOOT_TIMER && offset !== GUEST_CONTROL_EXIT_STATUS)) {
      this.warnOnce(ODD_ACCESS, 'ignored write of size %d at offset %d', size, offset);
      return;
    }
    const byte = value & 0xff;
    if (offset === GUEST_CONTROL_EXIT_STATUS) {
      this.onExitStatus(byte);
    } else if (byte === GUEST_BOOT_COMPLETE_MAGIC) {
      this.onBootTimer();
    } else {
      this.warnOnce(ODD_BOOT_VALUE, 'ignored boot-timer value %d', byte);
    }
  }

  private warnOnce(kind: number, format: string, ...args: unknown[]): void {
    if ((this.warned & kind) !== 0) return;
    this.warned |= kind;
    debug(format, ...args);
  }
}
