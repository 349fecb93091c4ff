/**
 * Test-only libc helpers for the I/O loop tests: pipes, raw reads/writes and
 * counting this process's open fds. Usable on any thread (koffi bindings are per thread).
 */
import koffi from 'koffi';
import { readdirSync } from 'node:fs';
import { HostError } from '../../lib/errors.js';

const libc = koffi.load('libc.so.6');
const pipe2 = libc.func('pipe2', 'int', ['void *', 'int']) as (fds: Uint8Array, flags: number) => number;
const readRaw = libc.func('read', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;
const writeRaw = libc.func('write', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Uint8Array, len: number) => number;

export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

/** A pipe: [read end, write end], close-on-exec, plus `flags` (e.g. O_NONBLOCK). */
export function makePipe(flags = 0): [number, number] {
  const b = new Uint8Array(8);
  if (pipe2(b, O_CLOEXEC | flags) !== 0) throw new HostError('pipe2', koffi.errno() as number);
  const v = new DataView(b.buffer);
  return [v.getInt32(0, true), v.getInt32(4, true)];
}

/** read(2): the byte count, or -errno. */
export function readFd(fd: number, buf: Uint8Array): number {
  const n = readRaw(fd, buf, buf.length);
  return n >= 0 ? n : -(koffi.errno() as number);
}

/** write(2): the byte count, or -errno. */
export function writeFd(fd: number, buf: Uint8Array): number {
  const n = writeRaw(fd, buf, buf.length);
  return n >= 0 ? n : -(koffi.errno() as number);
}

/** Number of open fds of this process. */
export function countFds(): number {
  return readdirSync('/proc/self/fd').length;
}

const poll = libc.func('poll', 'int', ['void *', 'unsigned long', 'int']) as (fds: Uint8Array, n: number, timeoutMs: number) => number;
const POLLIN = 1;
const EINTR = 4;
const pollBuf = new Uint8Array(8); // struct pollfd { int fd; short events; short revents; }
const pollView = new DataView(pollBuf.buffer);

/** Blocks up to `timeoutMs` until `fd` is readable; false on timeout. Throws HostError('poll'). */
export function waitReadable(fd: number, timeoutMs: number): boolean {
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, POLLIN, true);
  pollView.setInt16(6, 0, true);
  const n = poll(pollBuf, 1, timeoutMs);
  if (n < 0) {
    const e = koffi.errno() as number;
    if (e === EINTR) return waitReadable(fd, timeoutMs);
    throw new HostError('poll', e);
  }
  return n > 0;
}
