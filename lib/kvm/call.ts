import { KvmError } from '../errors.js';
import * as ffi from './ffi.js';
import * as io from './ioctls.js';

/** ioctl with a scalar argument; throws KvmError on failure. */
export function ioctlValue(fd: number, req: number, arg: number | bigint = 0): number {
  const r = ffi.ioctlValue(fd, req, arg);
  if (r < 0) throw new KvmError(io.ioctlName(req), ffi.errno());
  return r;
}

/** ioctl with a pointer argument; throws KvmError on failure. */
export function ioctlPtr(fd: number, req: number, arg: Uint8Array | bigint): number {
  const r = ffi.ioctlPtr(fd, req, arg);
  if (r < 0) throw new KvmError(io.ioctlName(req), ffi.errno());
  return r;
}

