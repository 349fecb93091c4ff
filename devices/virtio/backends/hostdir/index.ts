/**
 * The sandboxed host-directory backend (see README.md): the protocol-neutral
 * file API that virtio-9p (devices/virtio/9p) and virtio-fs build on.
 */
export { HostDir, kindOf, sanitizePerm, type HostDirOptions } from './hostdir.js';
export { OpenFile } from './file-io.js';
export { FsError } from './errors.js';
export { Node, type NodeKind } from './nodes.js';
export { openHostDir, type HostDirHandle } from './open.js';
export { componentBytes, type NameInput } from './names.js';
export * from './types.js';

/** One shared directory as the user configures it (lib/config.ts's ShareConfig has this shape; devices do not import lib/config). */
export interface ShareEntry {
  /** Mount tag the guest uses: 1-31 bytes for 9p, 1-36 for virtiofs. */
  readonly tag: string;
  /** Host directory to share; nothing outside it is reachable. */
  readonly path: string;
  readonly readOnly?: boolean | undefined;
  readonly protocol: '9p' | 'virtiofs';
  /** virtio-fs only: 'never' opens every file for direct I/O (no guest page cache). Default 'auto'. */
  readonly cache?: 'auto' | 'never' | undefined;
}
