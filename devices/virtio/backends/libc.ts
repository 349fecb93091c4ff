/**
 * libc calls the virtio backends make (block and entropy host I/O), bound once
 * per thread through koffi with fixed signatures, like lib/kvm/ffi.ts.
 *
 * Every function returns the raw libc result (-1 on failure); read
 * {@link errno} right after a failure, before any other native call.
 * Offsets are JS numbers (safe integers); koffi converts them to off_t.
 */
import { errno } from '../../../lib/kvm/ffi.js';
import { EACCES, EINTR, EINVAL, EIO, EISDIR, ELOOP, ENOENT, ENOSYS, ENOTDIR, EOPNOTSUPP, EPERM, EROFS, EWOULDBLOCK } from '../../../lib/sys.js';
/** Linux errno values, defined once in lib/sys.ts. */
export { EACCES, EINTR, EINVAL, EIO, EISDIR, ELOOP, ENOENT, ENOSYS, ENOTDIR, EOPNOTSUPP, EPERM, EROFS, EWOULDBLOCK };
import { libc as sysLibc } from '../../../lib/sys.js';

export { errno };

const libc = sysLibc;

/** A buffer argument: a JS byte array, or a host address (guest memory). */
export type HostBuffer = Uint8Array | bigint;

/** preadv(fd, iov, iovcnt, offset): `iov` holds `iovcnt` struct iovec (see iovec.ts). */
export const preadv = libc.func('preadv', 'long', ['int', 'void *', 'int', 'int64_t']) as (
  fd: number, iov: Uint8Array, iovcnt: number, offset: number) => number;
/** pwritev(fd, iov, iovcnt, offset). */
export const pwritev = libc.func('pwritev', 'long', ['int', 'void *', 'int', 'int64_t']) as (
  fd: number, iov: Uint8Array, iovcnt: number, offset: number) => number;
/** pwrite(fd, buf, count, offset). */
export const pwrite = libc.func('pwrite', 'long', ['int', 'void *', 'size_t', 'int64_t']) as (
  fd: number, buf: HostBuffer, count: number, offset: number) => number;
export const fdatasync = libc.func('fdatasync', 'int', ['int']) as (fd: number) => number;
/** fallocate(fd, mode, offset, len) with FALLOC_FL_* mode bits. */
export const fallocate = libc.func('fallocate', 'int', ['int', 'int', 'int64_t', 'int64_t']) as (
  fd: number, mode: number, offset: number, len: number) => number;
/** flock(fd, LOCK_* operation). */
export const flock = libc.func('flock', 'int', ['int', 'int']) as (fd: number, op: number) => number;
/** lseek(fd, offset, whence): the new offset, or -1. */
export const lseek = libc.func('lseek', 'int64_t', ['int', 'int64_t', 'int']) as (fd: number, offset: number, whence: number) => number;
/** getrandom(buf, len, flags): bytes written, or -1. */
export const getrandom = libc.func('getrandom', 'long', ['void *', 'size_t', 'unsigned int']) as (
  buf: HostBuffer, len: number, flags: number) => number;

/** Largest iovcnt preadv/pwritev accept (UIO_MAXIOV). */
export const IOV_MAX = 1024;

// linux/falloc.h
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

// sys/file.h
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;

export const SEEK_END = 2;

// errno values (x86-64 and arm64 Linux).
