/**
 * Unix stream sockets for virtio-vsock's "hybrid" host side (Firecracker's
 * design): the listening socket at `udsPath` (created on the main thread, so
 * its errors are ConfigErrors before the VM starts), and the raw,
 * nonblocking socket calls the device makes on the I/O worker, whose loop
 * blocks in epoll_wait and so cannot use Node's `net`.
 *
 * Data moves between sockets and guest memory without a JS copy: readv and
 * sendmsg take iovecs that point into guest RAM (see iovec.ts).
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { ConfigError, errnoName, HostError } from '../../../lib/errors.js';
import { addressOf, errno } from '../../../lib/kvm/ffi.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { Segment } from '../queue/types.js';
import type { ShutdownHow, VsockSockets } from '../vsock/backend.js';
import { IovecArray } from './iovec.js';
import { EACCES, EADDRINUSE, EAGAIN, ECONNREFUSED, ECONNRESET, EINTR, ENAMETOOLONG, ENOENT, ENOTDIR, EPIPE } from '../../../lib/sys.js';
/** Linux errno values, defined once in lib/sys.ts. */
export { EACCES, EADDRINUSE, EAGAIN, ECONNREFUSED, ECONNRESET, EINTR, ENAMETOOLONG, ENOENT, ENOTDIR, EPIPE };
import { libc as sysLibc } from '../../../lib/sys.js';

const libc = sysLibc;

const socket = libc.func('socket', 'int', ['int', 'int', 'int']) as (domain: number, type: number, protocol: number) => number;
const bind = libc.func('bind', 'int', ['int', 'void *', 'uint32_t']) as (fd: number, addr: Uint8Array, len: number) => number;
const listen = libc.func('listen', 'int', ['int', 'int']) as (fd: number, backlog: number) => number;
const accept4 = libc.func('accept4', 'int', ['int', 'void *', 'void *', 'int']) as (fd: number, addr: null, len: null, flags: number) => number;
const connectRaw = libc.func('connect', 'int', ['int', 'void *', 'uint32_t']) as (fd: number, addr: Uint8Array, len: number) => number;
const readvRaw = libc.func('readv', 'long', ['int', 'void *', 'int']) as (fd: number, iov: Uint8Array, iovcnt: number) => number;
const sendmsgRaw = libc.func('sendmsg', 'long', ['int', 'void *', 'int']) as (fd: number, msg: Uint8Array, flags: number) => number;
const recvRaw = libc.func('recv', 'long', ['int', 'void *', 'size_t', 'int']) as (fd: number, buf: Uint8Array, len: number, flags: number) => number;
const sendRaw = libc.func('send', 'long', ['int', 'void *', 'size_t', 'int']) as (fd: number, buf: Uint8Array, len: number, flags: number) => number;
const shutdownRaw = libc.func('shutdown', 'int', ['int', 'int']) as (fd: number, how: number) => number;
const closeRaw = libc.func('close', 'int', ['int']) as (fd: number) => number;

// sys/socket.h, linux/un.h (x86-64 and arm64 Linux values).
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_PEEK = 0x2;
export const MSG_NOSIGNAL = 0x4000;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
/** sizeof(struct sockaddr_un): sa_family_t (u16) + sun_path[108]. */
export const SOCKADDR_UN_SIZE = 110;
/** Longest socket path in bytes: sun_path holds 108 bytes including the NUL. */
export const UNIX_PATH_MAX = 107;
/** Pending connections the kernel queues on the listening socket before accept. */
export const LISTEN_BACKLOG = 128;

// struct msghdr (LP64): msg_name @0, msg_namelen @8, msg_iov @16, msg_iovlen @24,
// msg_control @32, msg_controllen @40, msg_flags @48; 56 bytes.
const MSGHDR_SIZE = 56;
const MSGHDR_IOV = 16;
const MSGHDR_IOVLEN = 24;

/** struct sockaddr_un for `path` and the length to pass (family + path + NUL). Throws RangeError when too long. */
export function sockaddrUn(path: string): { addr: Uint8Array; len: number } {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length === 0 || bytes.length > UNIX_PATH_MAX || bytes.includes(0)) {
    throw new RangeError(`Unix socket path must be 1-${UNIX_PATH_MAX} bytes without NUL: ${JSON.stringify(path)}`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  return { addr, len: 2 + bytes.length + 1 };
}

/** A new nonblocking, close-on-exec AF_UNIX stream socket: the fd, or -errno. */
function newSocket(): number {
  const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd >= 0 ? fd : -errno();
}

/** Runs a libc call returning -1 on failure; retries EINTR; returns the result or -errno. */
function retry(call: () => number): number {
  for (;;) {
    const r = call();
    if (r >= 0) return r;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/**
 * The {@link VsockSockets} over libc. I/O worker only; one instance per
 * device (it owns reusable iovec and msghdr buffers, so it is not reentrant).
 */
export class LibcVsockSockets implements VsockSockets {
  private readonly iov = new IovecArray();
  private readonly msg = new Uint8Array(MSGHDR_SIZE);
  private readonly msgView = new DataView(this.msg.buffer);

  constructor() {
    // The iovec array is 16 KiB, so V8 keeps it off the JS heap, where it never moves: its address can go in msg_iov.
    this.msgView.setBigUint64(MSGHDR_IOV, addressOf(this.iov.buffer), true);
  }

  accept(listenFd: number): number {
    return retry(() => accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC));
  }

  connect(path: string): number {
    let sa: { addr: Uint8Array; len: number };
    try {
      sa = sockaddrUn(path);
    } catch {
      return -ENAMETOOLONG;
    }
    const fd = newSocket();
    if (fd < 0) return fd;
    // A Unix stream connect completes (or fails) at once; a full backlog is EAGAIN, not EINPROGRESS.
    const r = retry(() => connectRaw(fd, sa.addr, sa.len));
    if (r < 0) {
      closeRaw(fd);
      return r;
    }
    return fd;
  }

  readv(fd: number, memory: GuestMemory, segments: readonly Segment[]): number {
    // At most IOV_MAX pieces per call: a short read is an ordinary result for the caller.
    this.iov.fill(memory, segments, { index: 0, offset: 0 });
    if (this.iov.count === 0) return 0;
    return retry(() => readvRaw(fd, this.iov.buffer, this.iov.count));
  }

  writev(fd: number, memory: GuestMemory, segments: readonly Segment[]): number {
    this.iov.fill(memory, segments, { index: 0, offset: 0 });
    if (this.iov.count === 0) return 0;
    this.msgView.setBigUint64(MSGHDR_IOVLEN, BigInt(this.iov.count), true);
    // MSG_NOSIGNAL: a peer that went away is EPIPE here, never a SIGPIPE for the whole process.
    return retry(() => sendmsgRaw(fd, this.msg, MSG_NOSIGNAL));
  }

  recv(fd: number, buf: Uint8Array, length: number, peek: boolean): number {
    return retry(() => recvRaw(fd, buf, Math.min(length, buf.length), peek ? MSG_PEEK : 0));
  }

  send(fd: number, buf: Uint8Array): number {
    if (buf.length === 0) return 0;
    return retry(() => sendRaw(fd, buf, buf.length, MSG_NOSIGNAL));
  }

  shutdown(fd: number, how: ShutdownHow): void {
    shutdownRaw(fd, how === 'read' ? SHUT_RD : SHUT_WR);
  }

  close(fd: number): void {
    // EINTR is not retried: Linux has released the fd anyway.
    closeRaw(fd);
  }
}

/** A listening Unix socket at a path. `fd` is process-wide: pass the number to the I/O worker. */
export interface UnixListener {
  /** Nonblocking, close-on-exec listening socket. */
  readonly fd: number;
  readonly path: string;
  /** Closes the fd and removes the socket file (if it is still ours). Idempotent. Only once no thread uses the fd. */
  close(): void;
}

/**
 * Creates, binds and listens on a Unix stream socket at `path` (main thread).
 *
 * If `path` exists:
 * - a socket nobody listens on (connect is refused: a VMM that died without
 *   cleaning up) is stale and is unlinked;
 * - a socket somebody listens on is in use: ConfigError;
 * - anything else (a file, a directory) is never removed: ConfigError.
 *
 * `suffixBytes` reserves room for suffixes appended to the path later (vsock
 * appends `_<port>`): the path plus that many bytes must fit sun_path.
 * Throws ConfigError naming `field` and the fix; nothing stays open then.
 */
export function openUnixListener(path: string, opts: { field: string; suffixBytes?: number }): UnixListener {
  const { field } = opts;
  const suffix = opts.suffixBytes ?? 0;
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new ConfigError(field, 'must be a non-empty path without NUL characters', path);
  }
  const bytes = Buffer.byteLength(path);
  if (bytes + suffix > UNIX_PATH_MAX) {
    throw new ConfigError(field, `'${path}' is ${bytes} bytes; a Unix socket path allows ${UNIX_PATH_MAX}${suffix ? `, and ${suffix} are needed for the '_<port>' suffix` : ''}: use a shorter path (a relative one, or under /tmp)`, path);
  }
  removeStaleSocket(path, field);
  const fd = newSocket();
  if (fd < 0) throw new ConfigError(field, `cannot create a Unix socket: ${errnoName(-fd)}`, path, new HostError('socket', -fd));
  try {
    const sa = sockaddrUn(path);
    const b = retry(() => bind(fd, sa.addr, sa.len));
    if (b < 0) throw bindError(path, -b, field);
    const l = retry(() => listen(fd, LISTEN_BACKLOG));
    if (l < 0) throw new ConfigError(field, `cannot listen on '${path}': ${errnoName(-l)}`, path, new HostError('listen', -l, path));
  } catch (e) {
    closeRaw(fd);
    throw e;
  }
  // Remember which file is ours, so close() never unlinks a socket someone else bound there later.
  const st = lstatSync(path, { bigint: true });
  let open = true;
  return {
    fd,
    path,
    close: () => {
      if (!open) return;
      open = false;
      closeRaw(fd);
      try {
        const now = lstatSync(path, { bigint: true });
        if (now.ino === st.ino && now.dev === st.dev) unlinkSync(path);
      } catch {
        // Already gone: nothing to clean up.
      }
    },
  };
}

/** Unlinks `path` if it is a socket nobody listens on; throws ConfigError if it is in use or not a socket. */
function removeStaleSocket(path: string, field: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw new ConfigError(field, `cannot check '${path}' (${code ?? 'error'}); check each directory in the path`, path, e);
  }
  if (!st.isSocket()) {
    throw new ConfigError(field, `'${path}' already exists and is not a socket; remove it or choose another path`, path);
  }
  const probe = newSocket();
  if (probe < 0) throw new ConfigError(field, `cannot create a Unix socket: ${errnoName(-probe)}`, path, new HostError('socket', -probe));
  let r: number;
  try {
    const sa = sockaddrUn(path);
    r = retry(() => connectRaw(probe, sa.addr, sa.len));
  } finally {
    closeRaw(probe);
  }
  // EAGAIN: a listener whose backlog is full is very much alive.
  if (r >= 0 || -r === EAGAIN) {
    throw new ConfigError(field, `'${path}' is in use: a process (another VM?) is listening on it; stop it or choose another path`, path);
  }
  if (-r !== ECONNREFUSED) {
    throw new ConfigError(field, `'${path}' exists and cannot be checked (${errnoName(-r)}); remove it or choose another path`, path, new HostError('connect', -r, path));
  }
  try {
    unlinkSync(path);
  } catch (e) {
    throw new ConfigError(field, `'${path}' is a stale socket and cannot be removed (${(e as NodeJS.ErrnoException).code ?? 'error'}); remove it by hand`, path, e);
  }
}

function bindError(path: string, e: number, field: string): ConfigError {
  const cause = new HostError('bind', e, path);
  switch (e) {
    case ENOENT:
    case ENOTDIR:
      return new ConfigError(field, `cannot create '${path}': its directory does not exist`, path, cause);
    case EACCES:
      return new ConfigError(field, `permission denied creating '${path}'; grant this process write permission on its directory`, path, cause);
    case EADDRINUSE:
      return new ConfigError(field, `'${path}' already exists (created meanwhile?); remove it or choose another path`, path, cause);
    default:
      return new ConfigError(field, `cannot bind a Unix socket at '${path}': ${errnoName(e)}`, path, cause);
  }
}
