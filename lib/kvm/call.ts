import { KvmError } from '../errors.js';
import * as ffi from './ffi.js';
import * as io from './ioctls.js';

/**
 * How many times one ioctl is retried after EINTR. A signal that arrives while the kernel waits inside an
 * ioctl (SIGPROF from `node --cpu-prof`, for one: KVM_CREATE_VM failed with EINTR under it) interrupts the
 * call before it did anything, and the call is simply made again. KVM_RUN does not come here: its EINTR is a
 * kick (lib/kvm/vcpu.ts). The bound keeps a signal storm from spinning forever.
 */
export const EINTR_RETRIES = 1000;

/**
 * Runs `call` (an ioctl `req`) until it does not fail with EINTR, at most EINTR_RETRIES more times; throws
 * KvmError on failure. `errno` reads the failed call's errno (the tests give their own).
 */
export function retried(req: number, call: () => number, errno: () => number = ffi.errno): number {
  for (let i = 0; ; i++) {
    const r = call();
    if (r >= 0) return r;
    const e = errno();
    if (e !== ffi.EINTR || i >= EINTR_RETRIES) throw new KvmError(io.ioctlName(req), e);
  }
}

/** ioctl with a scalar argument; retried after EINTR; throws KvmError on failure. */
export function ioctlValue(fd: number, req: number, arg: number | bigint = 0): number {
  return retried(req, () => ffi.ioctlValue(fd, req, arg));
}

/** ioctl with a pointer argument; retried after EINTR; throws KvmError on failure. */
export function ioctlPtr(fd: number, req: number, arg: Uint8Array | bigint): number {
  return retried(req, () => ffi.ioctlPtr(fd, req, arg));
}

/**
 * ioctl with a scalar or pointer argument, made on a libuv pool thread (ffi.ts `ioctlValueOnPool`), for
 * the set-up ioctls that sleep in the kernel: the calling thread serves other VMs meanwhile. Retried
 * after EINTR like the others; rejects with KvmError on failure.
 */
export async function ioctlOnPool(fd: number, req: number, arg: number | bigint | Uint8Array): Promise<number> {
  for (let i = 0; ; i++) {
    const { result, errno } = typeof arg === 'object' ? await ffi.ioctlPtrOnPool(fd, req, arg) : await ffi.ioctlValueOnPool(fd, req, arg);
    if (result >= 0) return result;
    if (errno !== ffi.EINTR || i >= EINTR_RETRIES) throw new KvmError(io.ioctlName(req), errno);
  }
}
