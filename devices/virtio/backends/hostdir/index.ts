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
