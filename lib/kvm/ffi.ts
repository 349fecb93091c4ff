import koffi from '../koffi.js';
import { EAGAIN, EINTR, errno } from '../sys.js';
/** Linux errno values, defined once in lib/sys.ts. */
export { EAGAIN, EINTR };
import { libc as sysLibc } from '../sys.js';

/**
 * The libc calls flintvm makes, declared once through koffi with fixed
 * signatures (a variadic declaration costs 0.2-0.5 us more per call).
 * Every function returns the raw libc result; callers read `errno()` right
 * after a failure, before any other native call (errno is thread-local).
 *
 * Loaded per thread: each worker that imports this module gets its own
 * bindings, which is what koffi requires.
 */
const libc = sysLibc;

const ioctlValueFn = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
const ioctlPtrFn = libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']);
const closeFn = libc.func('close', 'int', ['int']);

/** ioctl(fd, request, scalar argument). */
export const ioctlValue = ioctlValueFn as (fd: number, req: number, arg: number | bigint) => number;
/** ioctl(fd, request, pointer) with a buffer (Uint8Array/Buffer) or a BigInt address. */
export const ioctlPtr = ioctlPtrFn as (fd: number, req: number, arg: Uint8Array | bigint | null) => number;

export const open = libc.func('open', 'int', ['str', 'int', 'int']) as (path: string, flags: number, mode: number) => number;
export const close = closeFn as (fd: number) => number;

/** What a call made on a pool thread returned, and its errno when it failed (-1). */
export interface AsyncResult {
  readonly result: number;
  readonly errno: number;
}

/**
 * Runs a libc call on one of libuv's pool threads (koffi's `.async`) and
 * resolves with its result and errno. For calls that sleep in the kernel
 * (a KVM ioctl waiting out an SRCU grace period, the close(2) that destroys
 * a VM): the calling thread, which serves every VM of the process, goes on
 * meanwhile. koffi gives the callback the pool thread's errno of the call.
 * A Uint8Array argument must not change until the promise settles.
 */
function onPool(fn: { async: (...args: unknown[]) => unknown }, args: unknown[]): Promise<AsyncResult> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: number) => {
      if (err) reject(err);
      else resolve({ result, errno: result < 0 ? errno() : 0 });
    });
  });
}

/** ioctl(fd, request, scalar argument) on a pool thread. */
export const ioctlValueOnPool = (fd: number, req: number, arg: number | bigint): Promise<AsyncResult> => onPool(ioctlValueFn, [fd, req, arg]);
/** ioctl(fd, request, pointer) on a pool thread. */
export const ioctlPtrOnPool = (fd: number, req: number, arg: Uint8Array | bigint | null): Promise<AsyncResult> => onPool(ioctlPtrFn, [fd, req, arg]);
/** close(fd) on a pool thread. */
export const closeOnPool = (fd: number): Promise<AsyncResult> => onPool(closeFn, [fd]);
export const read = libc.func('read', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;
export const write = libc.func('write', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;
export const mmap = libc.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'long']) as (
  addr: bigint | null, len: number | bigint, prot: number, flags: number, fd: number, off: number) => bigint | null;
export const munmap = libc.func('munmap', 'int', ['void *', 'size_t']) as (addr: bigint, len: number | bigint) => number;
export const madvise = libc.func('madvise', 'int', ['void *', 'size_t', 'int']) as (addr: bigint, len: number | bigint, advice: number) => number;
/** prctl(option, arg2..arg5) with integer arguments; PR_SET_VMA_ANON_NAME passes its name as a C string address. */
export const prctlName = libc.func('prctl', 'int', ['int', 'unsigned long', 'void *', 'size_t', 'str']) as (
  option: number, arg2: number, addr: bigint, len: number | bigint, name: string) => number;
/** prctl PR_SET_VMA / PR_SET_VMA_ANON_NAME (linux/prctl.h, Linux 5.17 with CONFIG_ANON_VMA_NAME): names an anonymous mapping in /proc/<pid>/maps. */
export const PR_SET_VMA = 0x53564d41;
export const PR_SET_VMA_ANON_NAME = 0;
/** memfd_create(name, flags): an anonymous file in memory (tmpfs semantics). */
export const memfdCreate = libc.func('memfd_create', 'int', ['str', 'unsigned int']) as (name: string, flags: number) => number;
export const eventfd = libc.func('eventfd', 'int', ['unsigned int', 'int']) as (initval: number, flags: number) => number;
export const getpid = libc.func('getpid', 'int', []) as () => number;
export const gettid = libc.func('gettid', 'int', []) as () => number;
export const tgkill = libc.func('tgkill', 'int', ['int', 'int', 'int']) as (tgid: number, tid: number, sig: number) => number;
export const sigaction = libc.func('sigaction', 'int', ['int', 'void *', 'void *']) as (sig: number, act: Uint8Array, old: Uint8Array | null) => number;

/** Address of a libc symbol (used as a harmless native signal handler). */
export function libcSymbol(name: string): bigint {
  return koffi.address(libc.symbol(name, 'void')) as unknown as bigint;
}

/** The calling thread's current errno. */
export { errno };

/**
 * A zero-copy Uint8Array over host memory at `addr` (must stay mapped while
 * the view is used). `len` must be at most 4 GiB (koffi aborts the process above).
 */
export function viewOf(addr: bigint, len: number): Uint8Array {
  if (len > 0x1_0000_0000) throw new RangeError(`view of ${len} bytes exceeds the 4 GiB view limit`);
  return new Uint8Array(koffi.view(addr as unknown as never, len) as ArrayBuffer);
}

/** Host address of a buffer (it must stay alive while the address is used). */
export function addressOf(buf: Uint8Array): bigint {
  return (koffi.address(buf as unknown as never) as unknown as bigint) ;
}

// open(2) flags and friends, x86-64/arm64 Linux values.
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
/** The range is not copied into a child on fork(2) (linux/mman.h). */
export const MADV_DONTFORK = 10;
/** The range is left out of core dumps (linux/mman.h). */
export const MADV_DONTDUMP = 16;
export const MFD_CLOEXEC = 1;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
