/**
 * virtio-vsock for the builder: open the host side on the main thread
 * (openVsockBackend), describe the device (VsockDevice.info), and build it on
 * the I/O worker (createVsockDevice).
 */
import { ConfigError } from '../../../lib/errors.js';
import { EventfdWakeup } from '../backends/wakeup.js';
import { LibcVsockSockets, openUnixListener } from '../backends/unix-socket.js';
import * as V from './constants.js';
import { VsockDevice, type VsockDeviceOptions } from './device.js';
import { TimerfdTicker } from './ticker.js';

export { VsockDevice, type VsockDeviceOptions } from './device.js';
export type { VsockStats } from './muxer.js';

/** What the main thread sends the I/O worker for the vsock device. Structured-cloneable. */
export interface VsockDeviceParams extends VsockDeviceOptions {
  /** The listening socket at udsPath (process-wide fd number). Not closed by the device. */
  readonly listenFd: number;
}

/** The opened host side: params for the I/O worker, and how to release the socket. */
export interface VsockBackend {
  readonly params: VsockDeviceParams;
  /** Closes the listening socket and removes its file. Idempotent. Only once the I/O worker is done with it. */
  close(): void;
}

/** The user's vsock settings (the shape of lib/config.ts's VsockConfig, which this layer does not import). */
export interface VsockSettings {
  readonly guestCid: number;
  readonly udsPath: string;
}

/** '_4294967295': the longest suffix a guest-initiated connection appends to udsPath. */
const PORT_SUFFIX_BYTES = 1 + String(V.VSOCK_MAX_PORT).length;

/**
 * Main thread: validates `cfg` and creates, binds and listens on the Unix
 * socket at `cfg.udsPath`, so every problem is a ConfigError before the VM
 * starts. `field` names the config field in errors (e.g. 'vsock').
 *
 * - guestCid: an integer with 3 <= cid < 2^32 - 1 (§5.10.4 reserves 0, 1, 2 and 0xffffffff).
 * - udsPath: a path whose bytes plus '_4294967295' fit a Unix socket address
 *   (107 bytes), so every `<udsPath>_<port>` can be reached. If it exists and
 *   is a stale socket (nobody listening) it is replaced; a live socket or any
 *   other file is an error, and is never removed.
 *
 * Nothing stays open when it throws.
 */
export function openVsockBackend(cfg: VsockSettings, field: string): VsockBackend {
  if (cfg === null || typeof cfg !== 'object') throw new ConfigError(field, 'must be an object like { guestCid: 3, udsPath: "/tmp/v.sock" }', cfg);
  const { guestCid, udsPath } = cfg;
  if (typeof guestCid !== 'number' || !Number.isInteger(guestCid) || guestCid < V.VSOCK_MIN_GUEST_CID || guestCid >= V.VMADDR_CID_ANY) {
    throw new ConfigError(`${field}.guestCid`, `must be an integer from ${V.VSOCK_MIN_GUEST_CID} to ${V.VMADDR_CID_ANY - 1} (0, 1 and 2 are reserved; 2 is the host), got ${String(guestCid)}`, guestCid);
  }
  if (typeof udsPath !== 'string') throw new ConfigError(`${field}.udsPath`, 'must be the path of a Unix socket to create', udsPath);
  const listener = openUnixListener(udsPath, { field: `${field}.udsPath`, suffixBytes: PORT_SUFFIX_BYTES });
  return { params: { guestCid, udsPath, listenFd: listener.fd }, close: () => listener.close() };
}

/** I/O worker: a VsockDevice over raw Unix sockets, with its timerfd tick and wakeup. */
export function createVsockDevice(params: VsockDeviceParams): VsockDevice {
  const { listenFd, ...options } = params;
  return new VsockDevice(options, listenFd, new LibcVsockSockets(), new TimerfdTicker(), new EventfdWakeup());
}
