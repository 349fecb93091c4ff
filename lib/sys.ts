/**
 * The host, as flintvm's code sees it, in one place: libc (loaded through
 * koffi), errno and its Linux values, the sizes everyone counts in, and the
 * host architecture. This is the only module that reads `process.arch` and
 * the only one that loads libc; the modules that bind libc functions
 * (lib/kvm/ffi.ts, lib/io/epoll.ts, devices/virtio/backends/*) take `libc`
 * from here.
 *
 * koffi bindings are per thread: each worker that imports this module gets
 * its own `libc`, which is what koffi requires. Nothing here holds state
 * across VMs.
 */
import koffi from './koffi.js';
import { writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

/** The host architecture, in the kernel's spelling. flintvm runs on these two; KVM runs guests of the host's own. */
export type HostArch = 'x86_64' | 'arm64';

/** The architecture of this process as Node reports it (`x64`, `arm64`, ...). */
export const NODE_ARCH: string = process.arch;

/** This host's architecture, or null on one flintvm does not run on. */
export const HOST_ARCH: HostArch | null = NODE_ARCH === 'x64' ? 'x86_64' : NODE_ARCH === 'arm64' ? 'arm64' : null;

/** True on an arm64 host. */
export const IS_ARM64 = HOST_ARCH === 'arm64';

/** True on an x86_64 host. */
export const IS_X86_64 = HOST_ARCH === 'x86_64';

/** This host's architecture; throws on a host flintvm does not run on. */
export function hostArch(): HostArch {
  if (HOST_ARCH === null) throw new Error(`flintvm runs on x86_64 and arm64 hosts, not ${NODE_ARCH}`);
  return HOST_ARCH;
}

/**
 * The native stack koffi gives this thread's C calls, in a worker: 1 MiB instead of koffi's 2 MiB. koffi
 * (3.3.4) maps each thread's call stack and heap when the thread first loads a library and never unmaps them
 * when the thread ends. With transparent huge pages on `always` (the Debian x86_64 test host), the 2 MiB
 * stack was backed by one huge page, so every ended vCPU or I/O worker left 2 MiB resident: a VM start/stop
 * cycle grew the process by 2.2 MiB (20 cycles of a VM with 4 devices: +43 MiB, against +2 MiB with smaller
 * regions). A region under 2 MiB can hold no huge page, so what stays is only the pages a worker touched. Our
 * C calls are system call wrappers; their frames need a few KiB.
 */
export const WORKER_KOFFI_STACK_BYTES = 1024 * 1024;

if (!isMainThread) {
  try {
    koffi.config({ ...koffi.config(), sync_stack_size: WORKER_KOFFI_STACK_BYTES });
  } catch {
    // This thread loaded a library through koffi before (a caller's own module): koffi keeps its configuration.
  }
}

/** The C library, loaded once per thread. Bind functions with fixed signatures (`libc.func`). */
export const libc = koffi.load('libc.so.6');

/** The calling thread's current errno. Read it right after the failing call, before any other native call. */
export function errno(): number {
  return koffi.errno() as number;
}

/**
 * CLOCK_MONOTONIC in milliseconds, the clock `performance.now()` counts on (libuv's hrtime), read without
 * perf_hooks: loading that in a worker thread (a new isolate) compiled ten of node's internal modules, 1.2 ms
 * of CPU per worker here. A worker turns it into the main thread's `performance.timeOrigin +
 * performance.now()` by adding the offset {@link epochOffsetMs} gave on the main thread.
 */
export function monotonicMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}

/** `performance.timeOrigin + performance.now() - monotonicMs()`: the same at any moment, on the main thread. */
export function epochOffsetMs(): number {
  return performance.timeOrigin + performance.now() - monotonicMs();
}

// Sizes.
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
/** The smallest page KVM maps and flintvm aligns to (x86_64 and arm64 with 4 KiB pages). */
export const PAGE_SIZE = 4 * KiB;

// Linux errno values (asm-generic/errno-base.h and errno.h; the same on x86_64 and arm64).
export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
/** The same value as EAGAIN on Linux. */
export const EWOULDBLOCK = EAGAIN;
export const ENOMEM = 12;
export const EACCES = 13;
export const EBUSY = 16;
export const EEXIST = 17;
export const EXDEV = 18;
export const ENODEV = 19;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const ENFILE = 23;
export const EMFILE = 24;
export const ENOSPC = 28;
export const EROFS = 30;
export const EPIPE = 32;
export const ERANGE = 34;
export const ENAMETOOLONG = 36;
export const ENOLCK = 37;
export const ENOSYS = 38;
export const ELOOP = 40;
export const ENODATA = 61;
export const EPROTO = 71;
export const EOVERFLOW = 75;
export const EMSGSIZE = 90;
export const EOPNOTSUPP = 95;
export const EADDRINUSE = 98;
export const ECONNRESET = 104;
export const ECONNREFUSED = 111;
export const ESTALE = 116;
export const EFBIG = 27;
export const EMLINK = 31;
export const ENOTEMPTY = 39;
export const ENOBUFS = 105;

/** The highest nice value, i.e. the lowest scheduling priority of a normal thread. */
export const NICE_MAX = 19;
const PRIO_PROCESS = 0;
let priorityCalls: { get: (which: number, who: number) => number; set: (which: number, who: number, prio: number) => number } | null = null;

/**
 * Lowers the calling thread's scheduling priority by `increment` nice steps,
 * from the nice value it has now (which it inherited from the thread that
 * started it), capped at {@link NICE_MAX}. On Linux, setpriority(PRIO_PROCESS, 0)
 * acts on the calling thread alone, not on its whole process. Any thread may
 * lower its own priority; raising it back needs CAP_SYS_NICE. Returns the
 * thread's nice value afterwards, or the errno when the kernel refused. An
 * increment of 0 changes nothing and returns the current value.
 */
export function lowerThisThreadPriority(increment: number): { readonly nice: number } | { readonly errno: number } {
  if (!Number.isSafeInteger(increment) || increment < 0) throw new RangeError(`nice increment ${increment} is not a non-negative integer`);
  priorityCalls ??= {
    get: libc.func('getpriority', 'int', ['int', 'uint32']) as (which: number, who: number) => number,
    set: libc.func('setpriority', 'int', ['int', 'uint32', 'int']) as (which: number, who: number, prio: number) => number,
  };
  // getpriority returns the nice value itself (-20..19), so -1 is only an error when errno says so.
  koffi.errno(0);
  const now = priorityCalls.get(PRIO_PROCESS, 0);
  if (now === -1 && errno() !== 0) return { errno: errno() };
  const want = Math.min(NICE_MAX, now + increment);
  if (want === now) return { nice: now };
  return priorityCalls.set(PRIO_PROCESS, 0, want) === 0 ? { nice: want } : { errno: errno() };
}

/** The longest thread name Linux keeps (TASK_COMM_LEN 16, less the NUL). */
export const THREAD_NAME_MAX = 15;

/**
 * Names the calling thread (its `comm`, what `top -H`, `ps -L` and
 * /proc/<pid>/task/<tid>/comm show), so a flintvm worker can be told from
 * node's own threads: `flintvm-vcpu0`, `flintvm-io`. Longer names are cut at
 * {@link THREAD_NAME_MAX} bytes. Best effort: returns false where /proc is
 * not mounted. Writes through /proc/thread-self, so it must run on the thread
 * it names (a worker names itself).
 */
export function nameThisThread(name: string): boolean {
  try {
    writeFileSync('/proc/thread-self/comm', Buffer.from(name).subarray(0, THREAD_NAME_MAX));
    return true;
  } catch {
    return false;
  }
}
