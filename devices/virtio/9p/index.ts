/**
 * virtio-9p: sharing a host directory over 9P2000.L. The three things the
 * builder needs (see ../README.md):
 *
 * 1. main thread: `openShareBackend(share, field)` validates a share and opens its root;
 * 2. main thread: `Virtio9pDevice.info({ tag })`;
 * 3. I/O worker: `create9pDevice(params)`.
 */
import type { ShareEntry as ShareConfig } from '../backends/hostdir/index.js';
import { ConfigError } from '../../../lib/errors.js';
import { HostDir, openHostDir } from '../backends/hostdir/index.js';
import { EventfdWakeup } from '../backends/wakeup.js';
import { tagBytes, Virtio9pDevice, type Virtio9pOptions } from './device.js';
import { P9Server } from './server.js';

export { Virtio9pDevice, type Virtio9pOptions } from './device.js';
export { P9Server } from './server.js';

/** What the main thread sends the I/O worker for one 9P share. Structured-cloneable. */
export interface Virtio9pParams extends Virtio9pOptions {
  /** O_PATH directory fd of the share root (process-wide number). Not closed by the device. */
  readonly rootFd: number;
  readonly readOnly: boolean;
  /** Cap on the fds the share may hold (default: a quarter of RLIMIT_NOFILE, 256..65536). */
  readonly maxFds?: number;
}

/** An opened share: params for the I/O worker, and close() for after the VM stopped. */
export interface ShareBackend {
  readonly params: Virtio9pParams;
  /** Closes the root fd. Idempotent. Only after the I/O worker has stopped. */
  close(): void;
}

/**
 * Main thread: validates `share` (a `protocol: '9p'` entry) and opens its root
 * directory (backends/hostdir/open.ts: an existing directory, openat2 available,
 * /proc mounted). Throws ConfigError naming `field` (e.g. `shares[0]`) plus the
 * member and the fix; nothing stays open when it throws. Checking that tags are
 * unique across shares is the caller's job.
 */
export function openShareBackend(share: ShareConfig, field: string): ShareBackend {
  if (share === null || typeof share !== 'object') throw new ConfigError(field, "must be an object like { tag: 'share', path: '/srv/data', protocol: '9p' }", share);
  if (share.protocol !== '9p') throw new ConfigError(`${field}.protocol`, `is ${JSON.stringify(share.protocol)}; openShareBackend serves '9p' shares only`, share.protocol);
  try {
    tagBytes(share.tag);
  } catch (e) {
    throw new ConfigError(`${field}.tag`, `${(e as Error).message} (the guest mounts it with: mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt)`, share.tag);
  }
  if (share.readOnly !== undefined && typeof share.readOnly !== 'boolean') throw new ConfigError(`${field}.readOnly`, 'must be true or false', share.readOnly);
  const readOnly = share.readOnly ?? false;
  const dir = openHostDir(share.path, { readOnly, field: `${field}.path` });
  return { params: { rootFd: dir.rootFd, readOnly, tag: share.tag }, close: () => dir.close() };
}

/** I/O worker: a Virtio9pDevice serving the share whose root is `params.rootFd`. Throws FsError when /proc is missing. */
export function create9pDevice(params: Virtio9pParams): Virtio9pDevice {
  const fs = new HostDir(params.rootFd, { readOnly: params.readOnly, ...(params.maxFds !== undefined ? { maxFds: params.maxFds } : {}) });
  return new Virtio9pDevice({ tag: params.tag }, new P9Server(fs), new EventfdWakeup());
}
