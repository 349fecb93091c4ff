/**
 * The host side of virtio-vsock: raw nonblocking Unix stream sockets, and a
 * housekeeping tick. The device model (device.ts, muxer.ts) calls only these
 * interfaces; backends/unix-socket.ts and ticker.ts implement them over libc.
 *
 * Every call is synchronous, never blocks (all sockets are O_NONBLOCK), and
 * runs on the I/O worker thread. Socket calls return a byte count or an fd
 * (>= 0), or a negative errno (-EAGAIN when the socket is not ready): a
 * failing host peer is an ordinary event for a connection, not an exception.
 * EINTR is retried inside.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { FdWatcher } from '../device.js';
import type { Segment } from '../queue/types.js';

/** shutdown(2) directions. */
export type ShutdownHow = 'read' | 'write';

export interface VsockSockets {
  /** accept4(listenFd) with SOCK_NONBLOCK|SOCK_CLOEXEC: a new fd, or -errno (-EAGAIN: none pending). */
  accept(listenFd: number): number;
  /** A new nonblocking AF_UNIX stream socket connected to `path`: the fd, or -errno (ENOENT, ECONNREFUSED, EAGAIN: backlog full). */
  connect(path: string): number;
  /** readv into the guest `segments` (zero copy): bytes read, 0 at end of stream, or -errno. */
  readv(fd: number, memory: GuestMemory, segments: readonly Segment[]): number;
  /** Sends the guest `segments` (zero copy, MSG_NOSIGNAL): bytes sent (maybe fewer), or -errno (-EPIPE: peer gone). */
  writev(fd: number, memory: GuestMemory, segments: readonly Segment[]): number;
  /** recv into `buf` (MSG_PEEK with `peek`): bytes, 0 at end of stream, or -errno. */
  recv(fd: number, buf: Uint8Array, length: number, peek: boolean): number;
  /** send from `buf` (MSG_NOSIGNAL): bytes sent, or -errno. */
  send(fd: number, buf: Uint8Array): number;
  /** shutdown(2); errors (the peer is already gone) are ignored. */
  shutdown(fd: number, how: ShutdownHow): void;
  /** close(2); errors are ignored (the fd is released anyway). */
  close(fd: number): void;
}

/**
 * A periodic callback on the I/O loop, armed only while the device has
 * deadlines to enforce (so an idle VM's I/O thread sleeps).
 */
export interface Ticker {
  /** Watches the tick's fd on `fds`; `onTick` runs on each expiry while running. */
  watch(fds: FdWatcher, onTick: () => void): void;
  /** Stops watching and disarms. */
  unwatch(fds: FdWatcher): void;
  /** Fires every `periodMs` from now on (no-op while already running). */
  start(periodMs: number): void;
  /** Disarms (no-op while stopped). */
  stop(): void;
  readonly running: boolean;
  /** Releases the fd. */
  close(): void;
}
