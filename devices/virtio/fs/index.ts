/**
 * virtio-fs: sharing a host directory over FUSE. The three things the builder
 * needs (see ../README.md):
 *
 * 1. main thread: `openFsShareBackend(share, field)` validates a share and opens its root;
 * 2. main thread: `VirtioFsDevice.info({ tag })`;
 * 3. I/O worker: `createFsDevice(params)`.
 */
import type { ShareEntry as ShareConfig } from '../backends/hostdir/index.js';
import { ConfigError } from '../../../lib/errors.js';
import { HostDir, openHostDir } from '../backends/hostdir/index.js';
import { EventfdWakeup } from '../backends/wakeup.js';
import { getrlimit, RLIMIT_NOFILE } from '../backends/hostdir/sys.js';
import { fsTagBytes, VirtioFsDevice, type VirtioFsOptions } from './device.js';
import { FuseServer } from './server.js';
import * as F from './constants.js';

export { VirtioFsDevice, fsTagBytes, type VirtioFsOptions } from './device.js';
export { FuseServer } from './server.js';

/** What the main thread sends the I/O worker for one virtio-fs share. Structured-cloneable. */
export interface VirtioFsParams extends VirtioFsOptions {
  /** O_PATH directory fd of the share root. Not closed by the device. */
  readonly rootFd: number;
  readonly readOnly: boolean;
  /**
   * Cap on the fds the share may hold. Default: half of RLIMIT_NOFILE's soft limit,
   * 256..1048576. FUSE pins one O_PATH fd per inode the guest kernel caches (until it
   * FORGETs it), so virtio-fs needs far more than 9P; raise the soft limit (Node raises
   * it to the hard limit at startup) for large trees.
   */
  readonly maxFds?: number;
  /** Every file opened for direct I/O (FOPEN_DIRECT_IO): the share's `cache: 'never'`. */
  readonly directIo?: boolean;
}

export interface FsShareBackend {
  readonly params: VirtioFsParams;
  /** Closes the root fd. Idempotent. Only after the I/O worker has stopped. */
  close(): void;
}

/**
 * Main thread: validates `share` (a `protocol: 'virtiofs'` entry) and opens its root.
 * Throws ConfigError naming `field`; nothing stays open when it throws.
 */
export function openFsShareBackend(share: ShareConfig, field: string): FsShareBackend {
  if (share === null || typeof share !== 'object') throw new ConfigError(field, "must be an object like { tag: 'share', path: '/srv/data', protocol: 'virtiofs' }", share);
  if (share.protocol !== 'virtiofs') throw new ConfigError(`${field}.protocol`, `is ${JSON.stringify(share.protocol)}; openFsShareBackend serves 'virtiofs' shares only`, share.protocol);
  try {
    fsTagBytes(share.tag);
  } catch (e) {
    throw new ConfigError(`${field}.tag`, `${(e as Error).message} (the guest mounts it with: mount -t virtiofs TAG /mnt)`, share.tag);
  }
  if (share.readOnly !== undefined && typeof share.readOnly !== 'boolean') throw new ConfigError(`${field}.readOnly`, 'must be true or false', share.readOnly);
  const readOnly = share.readOnly ?? false;
  if (share.cache !== undefined && share.cache !== 'auto' && share.cache !== 'never') throw new ConfigError(`${field}.cache`, "must be 'auto' or 'never'", share.cache);
  const dir = openHostDir(share.path, { readOnly, field: `${field}.path` });
  return { params: { rootFd: dir.rootFd, readOnly, tag: share.tag, directIo: share.cache === 'never' }, close: () => dir.close() };
}

/** I/O worker: a VirtioFsDevice serving the share whose root is `params.rootFd`. */
export function createFsDevice(params: VirtioFsParams): VirtioFsDevice {
  const fs = new HostDir(params.rootFd, { readOnly: params.readOnly, maxFds: params.maxFds ?? defaultFsMaxFds() });
  return new VirtioFsDevice({ tag: params.tag }, new FuseServer(fs, F.MAX_HANDLES, { directIo: params.directIo ?? false }), new EventfdWakeup());
}

/** Half the soft RLIMIT_NOFILE, clamped to 256..1048576 (1024 when it cannot be read). */
export function defaultFsMaxFds(): number {
  const buf = new Uint8Array(16);
  if (getrlimit(RLIMIT_NOFILE, buf) < 0) return 1024;
  const cur = new DataView(buf.buffer).getBigUint64(0, true);
  const half = cur >= 2n * 1048576n ? 1048576 : Number(cur / 2n);
  return Math.max(256, Math.min(1048576, half));
}
