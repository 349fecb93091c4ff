/**
 * epoll, eventfd and timerfd through koffi, for the I/O worker's event loop.
 *
 * Two levels:
 * - the raw libc functions (`epoll_create1`, `epoll_ctl`, …) with fixed
 *   signatures; they return the libc result and leave errno to the caller;
 * - small wrappers (`epollCreate`, `epollCtl`, `readEventfd`, …) that throw a
 *   {@link HostError} naming the call on failure.
 *
 * The bindings are local to this module (not lib/kvm/ffi.ts) so the event loop
 * depends only on libc. koffi bindings are per thread: every worker that
 * imports this module loads its own. The scratch buffers below are
 * module-level, hence per thread too, and never shared across threads.
 */
import { HostError } from '../errors.js';
import { EAGAIN, EBADF, EINTR, ENOENT, EPERM, errno } from '../sys.js';
/** Linux errno values, defined once in lib/sys.ts. */
export { EAGAIN, EBADF, EINTR, ENOENT, EPERM };
import { libc as sysLibc } from '../sys.js';
import { IS_X86_64 } from '../sys.js';

const libc = sysLibc;

/** epoll_create1(flags): a new epoll fd, or -1. */
export const epoll_create1 = libc.func('epoll_create1', 'int', ['int']) as (flags: number) => number;
/** epoll_ctl(epfd, op, fd, event): 0 or -1. `event` is one `struct epoll_event` (see {@link EPOLL_EVENT_SIZE}); null for EPOLL_CTL_DEL. */
export const epoll_ctl = libc.func('epoll_ctl', 'int', ['int', 'int', 'int', 'void *']) as (
  epfd: number, op: number, fd: number, event: Uint8Array | null) => number;
/** epoll_wait(epfd, events, maxevents, timeout ms): number of ready events, 0 on timeout, -1 on error (EINTR when kicked). */
export const epoll_wait = libc.func('epoll_wait', 'int', ['int', 'void *', 'int', 'int']) as (
  epfd: number, events: Uint8Array, maxEvents: number, timeoutMs: number) => number;
/** eventfd(initval, flags): a new eventfd, or -1. */
export const eventfd = libc.func('eventfd', 'int', ['unsigned int', 'int']) as (initval: number, flags: number) => number;
/** timerfd_create(clockid, flags): a new timerfd, or -1. */
export const timerfd_create = libc.func('timerfd_create', 'int', ['int', 'int']) as (clockid: number, flags: number) => number;
/** timerfd_settime(fd, flags, new_value, old_value): 0 or -1. Both values are a 32-byte `struct itimerspec`. */
export const timerfd_settime = libc.func('timerfd_settime', 'int', ['int', 'int', 'void *', 'void *']) as (
  fd: number, flags: number, newValue: Uint8Array, oldValue: Uint8Array | null) => number;
const read = libc.func('read', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;
const write = libc.func('write', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;
const close = libc.func('close', 'int', ['int']) as (fd: number) => number;

/** The calling thread's errno; read it right after the failing call, before any other native call. */
export { errno };

// epoll_event.events bits (include/uapi/linux/eventpoll.h).
export const EPOLLIN = 0x001;
export const EPOLLPRI = 0x002;
export const EPOLLOUT = 0x004;
/** Always reported, whether asked for or not. */
export const EPOLLERR = 0x008;
/** Always reported, whether asked for or not (e.g. the write end of a pipe closed). */
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
export const EPOLLONESHOT = 0x4000_0000;
/** Bit 31; as a JS number it is 2^31 (not the negative `1 << 31`). */
export const EPOLLET = 0x8000_0000;

export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLL_CLOEXEC = 0o2000000;

export const EFD_SEMAPHORE = 1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

export const CLOCK_MONOTONIC = 1;
export const TFD_NONBLOCK = 0o4000;
export const TFD_CLOEXEC = 0o2000000;
export const TFD_TIMER_ABSTIME = 1;

/**
 * `struct epoll_event` is packed on x86-64 only (glibc's `__EPOLL_PACKED`):
 * 12 bytes, events (u32) at 0, data (u64) at 4. Elsewhere (arm64) it has
 * natural alignment: 16 bytes, data at 8.
 */
export const EPOLL_EVENT_SIZE = IS_X86_64 ? 12 : 16;
/** Offset of the 64-bit `data` field in a `struct epoll_event` (little-endian on both supported arches). */
export const EPOLL_EVENT_DATA = IS_X86_64 ? 4 : 8;

/** struct itimerspec: it_interval {tv_sec i64, tv_nsec i64} at 0, it_value at 16. */
const ITIMERSPEC_SIZE = 32;
const ITIMERSPEC_INTERVAL = 0;
const ITIMERSPEC_VALUE = 16;
const NS_PER_MS = 1_000_000;
const MS_PER_S = 1000;
const COUNTER_SIZE = 8;

// Per-thread scratch buffers (module state is per worker).
const ctlEvent = new Uint8Array(EPOLL_EVENT_SIZE);
const ctlView = new DataView(ctlEvent.buffer);
const counterBuf = new Uint8Array(COUNTER_SIZE);
const counterView = new DataView(counterBuf.buffer);
const ONE = (() => { const b = new Uint8Array(COUNTER_SIZE); new DataView(b.buffer).setBigUint64(0, 1n, true); return b; })();
const timerSpec = new Uint8Array(ITIMERSPEC_SIZE);
const timerView = new DataView(timerSpec.buffer);

/** A new epoll fd (close-on-exec by default). Throws HostError('epoll_create1'). */
export function epollCreate(flags = EPOLL_CLOEXEC): number {
  const fd = epoll_create1(flags);
  if (fd < 0) throw new HostError('epoll_create1', errno());
  return fd;
}

/**
 * epoll_ctl with the event's data set to `dataLow` (u32, usually the fd) and
 * `dataHigh` (u32) in the upper half. For EPOLL_CTL_DEL the event is ignored.
 * Throws HostError('epoll_ctl') with the op and fd in the message; the error's
 * `errno` lets callers tell ENOENT/EEXIST/EPERM (EPERM: the fd is a regular file or directory).
 */
export function epollCtl(epfd: number, op: number, fd: number, events: number, dataLow = fd, dataHigh = 0): void {
  ctlView.setUint32(0, events >>> 0, true);
  ctlView.setUint32(EPOLL_EVENT_DATA, dataLow >>> 0, true);
  ctlView.setUint32(EPOLL_EVENT_DATA + 4, dataHigh >>> 0, true);
  if (epoll_ctl(epfd, op, fd, ctlEvent) !== 0) {
    const e = errno();
    throw new HostError('epoll_ctl', e, `${ctlOpName(op)} fd ${fd}${e === EPERM ? ' (regular files and directories cannot be watched)' : ''}`);
  }
}

/**
 * epoll_wait into `events` (room for `maxEvents` entries of EPOLL_EVENT_SIZE).
 * Returns the number of ready entries; 0 on timeout *and on EINTR* (a kick):
 * callers re-check whatever made them kick. Blocks the calling thread for up
 * to `timeoutMs` (-1: forever) — call it only on a dedicated worker.
 * Throws HostError('epoll_wait') on any other error.
 */
export function epollWait(epfd: number, events: Uint8Array, maxEvents: number, timeoutMs: number): number {
  if (events.byteLength < maxEvents * EPOLL_EVENT_SIZE) throw new RangeError(`epoll_wait buffer of ${events.byteLength} bytes is too small for ${maxEvents} events`);
  const n = epoll_wait(epfd, events, maxEvents, timeoutMs);
  if (n >= 0) return n;
  const e = errno();
  if (e === EINTR) return 0;
  throw new HostError('epoll_wait', e, `epfd ${epfd}`);
}

/** A new eventfd, nonblocking and close-on-exec unless told otherwise. Throws HostError('eventfd'). */
export function createEventfd(initval = 0, flags = EFD_NONBLOCK | EFD_CLOEXEC): number {
  const fd = eventfd(initval, flags);
  if (fd < 0) throw new HostError('eventfd', errno());
  return fd;
}

/**
 * Reads and resets an eventfd's 8-byte counter (the value; 1 per read in
 * EFD_SEMAPHORE mode). Returns 0n if the counter is zero (EAGAIN on a
 * nonblocking eventfd): a spurious wakeup is not an error. Retries EINTR.
 * Also reads a timerfd's expiration count. Throws HostError('read').
 */
export function readEventfd(fd: number): bigint {
  for (;;) {
    const n = read(fd, counterBuf, COUNTER_SIZE);
    if (n === COUNTER_SIZE) return counterView.getBigUint64(0, true);
    if (n >= 0) throw new HostError('read', 0, `eventfd ${fd}: short read of ${n} bytes`);
    const e = errno();
    if (e === EAGAIN) return 0n;
    if (e !== EINTR) throw new HostError('read', e, `eventfd ${fd}`);
  }
}

/** The number of expirations of a timerfd since the last read, 0n if none (see {@link readEventfd}). */
export const readTimerfd = readEventfd;

/**
 * Adds `value` (default 1) to an eventfd's counter, waking its watchers. Any
 * thread. On a nonblocking eventfd whose counter is already at the maximum
 * (EAGAIN) the fd is already readable, so that counts as success. Retries
 * EINTR. Throws HostError('write').
 */
export function signalEventfd(fd: number, value = 1n): void {
  let buf = ONE;
  if (value !== 1n) {
    counterView.setBigUint64(0, value, true);
    buf = counterBuf;
  }
  for (;;) {
    const n = write(fd, buf, COUNTER_SIZE);
    if (n === COUNTER_SIZE) return;
    const e = errno();
    if (n >= 0) throw new HostError('write', 0, `eventfd ${fd}: short write of ${n} bytes`);
    if (e === EAGAIN) return;
    if (e !== EINTR) throw new HostError('write', e, `eventfd ${fd}`);
  }
}

/** A new timerfd on CLOCK_MONOTONIC, nonblocking and close-on-exec. Disarmed until {@link setTimerfd}. Throws HostError('timerfd_create'). */
export function createTimerfd(clockid = CLOCK_MONOTONIC, flags = TFD_NONBLOCK | TFD_CLOEXEC): number {
  const fd = timerfd_create(clockid, flags);
  if (fd < 0) throw new HostError('timerfd_create', errno());
  return fd;
}

/**
 * Arms a timerfd: first expiry after `initialMs`, then every `intervalMs`
 * (0: once). Milliseconds may be fractional. `initialMs` 0 means "as soon as
 * possible" (1 ns), not "disarm": use {@link disarmTimerfd} for that.
 * Throws RangeError for a negative or non-finite time, HostError('timerfd_settime').
 */
export function setTimerfd(fd: number, initialMs: number, intervalMs = 0): void {
  putTimespec(ITIMERSPEC_INTERVAL, intervalMs);
  putTimespec(ITIMERSPEC_VALUE, initialMs);
  // An all-zero it_value disarms the timer; the caller asked for an expiry.
  if (timerView.getBigInt64(ITIMERSPEC_VALUE, true) === 0n && timerView.getBigInt64(ITIMERSPEC_VALUE + 8, true) === 0n) {
    timerView.setBigInt64(ITIMERSPEC_VALUE + 8, 1n, true);
  }
  if (timerfd_settime(fd, 0, timerSpec, null) !== 0) throw new HostError('timerfd_settime', errno(), `timerfd ${fd}`);
}

/** Disarms a timerfd. Throws HostError('timerfd_settime'). */
export function disarmTimerfd(fd: number): void {
  timerSpec.fill(0);
  if (timerfd_settime(fd, 0, timerSpec, null) !== 0) throw new HostError('timerfd_settime', errno(), `timerfd ${fd}`);
}

/** Closes an fd. EINTR is not retried (Linux has released the fd anyway). Throws HostError('close') on EBADF and the like. */
export function closeFd(fd: number): void {
  if (close(fd) !== 0) {
    const e = errno();
    if (e !== EINTR) throw new HostError('close', e, `fd ${fd}`);
  }
}

function putTimespec(offset: number, ms: number): void {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`timer duration must be a finite number of ms >= 0, got ${ms}`);
  const sec = Math.floor(ms / MS_PER_S);
  const nsec = Math.round((ms - sec * MS_PER_S) * NS_PER_MS);
  // Rounding can carry a full second (e.g. 999.9999999 ms).
  const carry = nsec >= MS_PER_S * NS_PER_MS ? 1 : 0;
  timerView.setBigInt64(offset, BigInt(sec + carry), true);
  timerView.setBigInt64(offset + 8, BigInt(carry ? 0 : nsec), true);
}

function ctlOpName(op: number): string {
  return op === EPOLL_CTL_ADD ? 'EPOLL_CTL_ADD' : op === EPOLL_CTL_DEL ? 'EPOLL_CTL_DEL' : op === EPOLL_CTL_MOD ? 'EPOLL_CTL_MOD' : `op ${op}`;
}
