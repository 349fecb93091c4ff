/**
 * The libc calls of the host-directory backend, bound once per thread through
 * koffi with fixed signatures (its own libc load, like backends/libc.ts), and
 * the kernel constants and struct layouts they use (x86-64 and arm64 Linux).
 *
 * Every function returns the raw libc result (-1 on failure); read
 * {@link errno} right after a failure, before any other native call. Paths are
 * NUL-terminated byte arrays (see names.ts: guest names are bytes, not UTF-16
 * strings, and a JS string would be re-encoded by koffi). Offsets are JS
 * numbers or bigints (koffi returns a bigint for 64-bit results past 2^53).
 */
import { E2BIG, EACCES, EAGAIN, EBADF, EBUSY, EEXIST, EFBIG, EINTR, EINVAL, EIO, EISDIR, ELOOP, EMFILE, EMLINK, ENAMETOOLONG, ENFILE, ENODATA, ENOENT, ENOLCK, ENOMEM, ENOSPC, ENOSYS, ENOTDIR, ENOTEMPTY, ENXIO, EOPNOTSUPP, EOVERFLOW, EPERM, EPROTO, ERANGE, EROFS, ESTALE, EXDEV, errno } from '../../../../lib/sys.js';
/** Linux errno values, defined once in lib/sys.ts. */
export { E2BIG, EACCES, EAGAIN, EBADF, EBUSY, EEXIST, EFBIG, EINTR, EINVAL, EIO, EISDIR, ELOOP, EMFILE, EMLINK, ENAMETOOLONG, ENFILE, ENODATA, ENOENT, ENOLCK, ENOMEM, ENOSPC, ENOSYS, ENOTDIR, ENOTEMPTY, ENXIO, EOPNOTSUPP, EOVERFLOW, EPERM, EPROTO, ERANGE, EROFS, ESTALE, EXDEV };
import { libc as sysLibc } from '../../../../lib/sys.js';
import { IS_ARM64 } from '../../../../lib/sys.js';

const libc = sysLibc;

/** A NUL-terminated C string, or a buffer (a path, a struct, a data buffer). */
type Ptr = Uint8Array;
/** A 64-bit argument: a safe integer or a bigint. */
type I64 = number | bigint;

/** The calling thread's errno, right after a failed call. */
export { errno };

/**
 * syscall(SYS_openat2, dirfd, path, &how, sizeof how): glibc 2.36 has no
 * wrapper. syscall() is variadic in C; a fixed declaration is fine on x86-64
 * and arm64 (integer arguments travel in the same registers either way).
 */
const syscall4 = libc.func('syscall', 'long', ['long', 'int', 'void *', 'void *', 'size_t']) as (
  nr: number, dirfd: number, path: Ptr, how: Ptr, size: number) => number;

/** openat2's number: 437 in the unified syscall table (the same on x86-64 and arm64). */
export const SYS_openat2 = 437;
/** sizeof(struct open_how) { u64 flags; u64 mode; u64 resolve; } */
export const OPEN_HOW_SIZE = 24;

/**
 * The struct open_how of this thread's openat2 calls, filled afresh by each
 * (the call is synchronous, so one per module instance, i.e. per thread, is
 * enough). A fresh 24-byte array per call cost about 1.1 us natively: koffi
 * has to move a small on-heap typed array to its own backing store before
 * it can pass a pointer (3.2 against 2.1 us per openat2 of a missing name,
 * 100,000 calls each).
 */
const openHow = new Uint8Array(new ArrayBuffer(OPEN_HOW_SIZE));
const openHowView = new DataView(openHow.buffer);

/** openat2(dirfd, path, {flags, mode, resolve}): a new fd, or -1. */
export function openat2(dirfd: number, path: Ptr, flags: number, mode: number, resolve: number): number {
  openHowView.setBigUint64(0, BigInt(flags >>> 0), true);
  openHowView.setBigUint64(8, BigInt(mode >>> 0), true);
  openHowView.setBigUint64(16, BigInt(resolve >>> 0), true);
  return syscall4(SYS_openat2, dirfd, path, openHow, OPEN_HOW_SIZE);
}

/** openat(dirfd, path, flags, mode). Only for re-opening our own fds through /proc/self/fd (see hostdir.ts). */
export const openat = libc.func('openat', 'int', ['int', 'void *', 'int', 'uint32_t']) as (
  dirfd: number, path: Ptr, flags: number, mode: number) => number;
export const close = libc.func('close', 'int', ['int']) as (fd: number) => number;
export const statx = libc.func('statx', 'int', ['int', 'void *', 'int', 'uint32_t', 'void *']) as (
  dirfd: number, path: Ptr, flags: number, mask: number, buf: Ptr) => number;
export const getdents64 = libc.func('getdents64', 'long', ['int', 'void *', 'size_t']) as (fd: number, buf: Ptr, count: number) => number;
export const mkdirat = libc.func('mkdirat', 'int', ['int', 'void *', 'uint32_t']) as (dirfd: number, path: Ptr, mode: number) => number;
export const unlinkat = libc.func('unlinkat', 'int', ['int', 'void *', 'int']) as (dirfd: number, path: Ptr, flags: number) => number;
export const renameat2 = libc.func('renameat2', 'int', ['int', 'void *', 'int', 'void *', 'uint32_t']) as (
  olddirfd: number, oldpath: Ptr, newdirfd: number, newpath: Ptr, flags: number) => number;
export const linkat = libc.func('linkat', 'int', ['int', 'void *', 'int', 'void *', 'int']) as (
  olddirfd: number, oldpath: Ptr, newdirfd: number, newpath: Ptr, flags: number) => number;
export const symlinkat = libc.func('symlinkat', 'int', ['void *', 'int', 'void *']) as (target: Ptr, newdirfd: number, linkpath: Ptr) => number;
export const readlinkat = libc.func('readlinkat', 'long', ['int', 'void *', 'void *', 'size_t']) as (
  dirfd: number, path: Ptr, buf: Ptr, size: number) => number;
export const mknodat = libc.func('mknodat', 'int', ['int', 'void *', 'uint32_t', 'uint64_t']) as (
  dirfd: number, path: Ptr, mode: number, dev: bigint) => number;
export const fchmod = libc.func('fchmod', 'int', ['int', 'uint32_t']) as (fd: number, mode: number) => number;
export const fchmodat = libc.func('fchmodat', 'int', ['int', 'void *', 'uint32_t', 'int']) as (
  dirfd: number, path: Ptr, mode: number, flags: number) => number;
/** fchownat(dirfd, path, uid, gid, flags): uid/gid 0xffffffff (-1) leave the id unchanged. */
export const fchownat = libc.func('fchownat', 'int', ['int', 'void *', 'uint32_t', 'uint32_t', 'int']) as (
  dirfd: number, path: Ptr, uid: number, gid: number, flags: number) => number;
/** utimensat(dirfd, path, times[2] (struct timespec, 16 bytes each), flags). */
export const utimensat = libc.func('utimensat', 'int', ['int', 'void *', 'void *', 'int']) as (
  dirfd: number, path: Ptr, times: Ptr, flags: number) => number;
export const ftruncate = libc.func('ftruncate', 'int', ['int', 'int64_t']) as (fd: number, length: I64) => number;
export const fsync = libc.func('fsync', 'int', ['int']) as (fd: number) => number;
export const fdatasync = libc.func('fdatasync', 'int', ['int']) as (fd: number) => number;
export const fstatfs = libc.func('fstatfs', 'int', ['int', 'void *']) as (fd: number, buf: Ptr) => number;
export const pread = libc.func('pread', 'long', ['int', 'void *', 'size_t', 'int64_t']) as (
  fd: number, buf: Ptr, count: number, offset: I64) => number;
export const pwrite = libc.func('pwrite', 'long', ['int', 'void *', 'size_t', 'int64_t']) as (
  fd: number, buf: Ptr, count: number, offset: I64) => number;
/** preadv(fd, iov, iovcnt, offset): `iov` is a struct iovec array (backends/iovec.ts) pointing into guest memory. */
export const preadv = libc.func('preadv', 'long', ['int', 'void *', 'int', 'int64_t']) as (
  fd: number, iov: Ptr, iovcnt: number, offset: I64) => number;
export const pwritev = libc.func('pwritev', 'long', ['int', 'void *', 'int', 'int64_t']) as (
  fd: number, iov: Ptr, iovcnt: number, offset: I64) => number;
export const fsetxattr = libc.func('fsetxattr', 'int', ['int', 'void *', 'void *', 'size_t', 'int']) as (
  fd: number, name: Ptr, value: Ptr, size: number, flags: number) => number;
/** getxattr / listxattr by path: here only on a /proc/self/fd/N link of a node's own fd (see core.ts fdLinkPath). */
export const getxattr = libc.func('getxattr', 'long', ['void *', 'void *', 'void *', 'size_t']) as (
  path: Ptr, name: Ptr, value: Ptr | null, size: number) => number;
export const listxattr = libc.func('listxattr', 'long', ['void *', 'void *', 'size_t']) as (path: Ptr, list: Ptr | null, size: number) => number;
export const fremovexattr = libc.func('fremovexattr', 'int', ['int', 'void *']) as (fd: number, name: Ptr) => number;
/** fcntl(fd, cmd, struct flock *): the lock commands only. Variadic in C; fixed here as ioctl is in lib/kvm/ffi.ts. */
export const fcntlLock = libc.func('fcntl', 'int', ['int', 'int', 'void *']) as (fd: number, cmd: number, lock: Ptr) => number;
/** lseek(fd, offset, whence): the new offset (a bigint past 2^53), or -1. */
export const lseek = libc.func('lseek', 'int64_t', ['int', 'int64_t', 'int']) as (fd: number, offset: I64, whence: number) => number | bigint;
export const fallocate = libc.func('fallocate', 'int', ['int', 'int', 'int64_t', 'int64_t']) as (
  fd: number, mode: number, offset: I64, len: I64) => number;
export const geteuid = libc.func('geteuid', 'uint32_t', []) as () => number;
/** getrlimit(resource, struct rlimit { u64 cur; u64 max; } *). */
export const getrlimit = libc.func('getrlimit', 'int', ['int', 'void *']) as (resource: number, buf: Ptr) => number;

// ---- constants: asm-generic/fcntl.h, with the arm64 differences (arch/arm64/include/uapi/asm/fcntl.h) ----

const ARM64 = IS_ARM64;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DSYNC = 0o10000;
export const O_DIRECTORY = ARM64 ? 0o40000 : 0o200000;
export const O_NOFOLLOW = ARM64 ? 0o100000 : 0o400000;
export const O_CLOEXEC = 0o2000000;
/** O_SYNC is __O_SYNC | O_DSYNC. */
export const O_SYNC = 0o4010000;
export const O_PATH = 0o10000000;

// linux/openat2.h
export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;

// linux/fcntl.h AT_* flags
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_SYMLINK_FOLLOW = 0x400;
export const AT_EMPTY_PATH = 0x1000;
export const AT_STATX_SYNC_AS_STAT = 0;

// linux/fs.h renameat2 flags
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;

// sys/stat.h
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;

// utimensat special nanosecond values
export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;

// fcntl lock commands and types (linux/fcntl.h: the OFD commands are the same on every arch)
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

// sys/xattr.h
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
/** Largest xattr value and list (linux/limits.h XATTR_SIZE_MAX / XATTR_LIST_MAX), and name (XATTR_NAME_MAX). */
export const XATTR_SIZE_MAX = 65536;
export const XATTR_LIST_MAX = 65536;
export const XATTR_NAME_MAX = 255;

/** NAME_MAX and PATH_MAX (linux/limits.h). */
export const NAME_MAX = 255;
export const PATH_MAX = 4096;

export const RLIMIT_NOFILE = 7;

// ---- struct statx (linux/stat.h) ----

export const STATX_TYPE = 0x1;
export const STATX_MODE = 0x2;
export const STATX_NLINK = 0x4;
export const STATX_UID = 0x8;
export const STATX_GID = 0x10;
export const STATX_ATIME = 0x20;
export const STATX_MTIME = 0x40;
export const STATX_CTIME = 0x80;
export const STATX_INO = 0x100;
export const STATX_SIZE = 0x200;
export const STATX_BLOCKS = 0x400;
export const STATX_BASIC_STATS = 0x7ff;
export const STATX_BTIME = 0x800;
export const STATX_SIZE_BYTES = 256;

/** The fields of struct statx the backend uses. Times are whole seconds plus nanoseconds. */
export interface RawStat {
  /** STATX_* bits the kernel filled. */
  readonly mask: number;
  readonly blksize: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  /** st_mode: type and permission bits. */
  readonly mode: number;
  readonly ino: bigint;
  readonly size: bigint;
  /** 512-byte blocks allocated. */
  readonly blocks: bigint;
  readonly atimeSec: bigint;
  readonly atimeNsec: number;
  readonly btimeSec: bigint;
  readonly btimeNsec: number;
  readonly ctimeSec: bigint;
  readonly ctimeNsec: number;
  readonly mtimeSec: bigint;
  readonly mtimeNsec: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly devMajor: number;
  readonly devMinor: number;
}

/** Decodes a struct statx buffer (little-endian on both supported arches). */
export function decodeStatx(b: Uint8Array): RawStat {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ts = (off: number): [bigint, number] => [dv.getBigInt64(off, true), dv.getUint32(off + 8, true)];
  const [atimeSec, atimeNsec] = ts(64);
  const [btimeSec, btimeNsec] = ts(80);
  const [ctimeSec, ctimeNsec] = ts(96);
  const [mtimeSec, mtimeNsec] = ts(112);
  return {
    mask: dv.getUint32(0, true),
    blksize: dv.getUint32(4, true),
    nlink: dv.getUint32(16, true),
    uid: dv.getUint32(20, true),
    gid: dv.getUint32(24, true),
    mode: dv.getUint16(28, true),
    ino: dv.getBigUint64(32, true),
    size: dv.getBigUint64(40, true),
    blocks: dv.getBigUint64(48, true),
    atimeSec, atimeNsec, btimeSec, btimeNsec, ctimeSec, ctimeNsec, mtimeSec, mtimeNsec,
    rdevMajor: dv.getUint32(128, true),
    rdevMinor: dv.getUint32(132, true),
    devMajor: dv.getUint32(136, true),
    devMinor: dv.getUint32(140, true),
  };
}

// ---- struct statfs (64-bit layout, x86-64 and arm64) ----

export const STATFS_SIZE = 120;

export interface RawStatfs {
  readonly type: bigint;
  readonly bsize: bigint;
  readonly blocks: bigint;
  readonly bfree: bigint;
  readonly bavail: bigint;
  readonly files: bigint;
  readonly ffree: bigint;
  /** f_fsid's two ints as one u64 (val[0] in the low half). */
  readonly fsid: bigint;
  readonly namelen: bigint;
}

export function decodeStatfs(b: Uint8Array): RawStatfs {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    type: dv.getBigUint64(0, true),
    bsize: dv.getBigUint64(8, true),
    blocks: dv.getBigUint64(16, true),
    bfree: dv.getBigUint64(24, true),
    bavail: dv.getBigUint64(32, true),
    files: dv.getBigUint64(40, true),
    ffree: dv.getBigUint64(48, true),
    fsid: BigInt(dv.getUint32(56, true)) | (BigInt(dv.getUint32(60, true)) << 32n),
    namelen: dv.getBigUint64(64, true),
  };
}

// ---- struct flock (x86-64 and arm64: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid) ----

export const FLOCK_SIZE = 32;

export function encodeFlock(type: number, start: bigint, len: bigint): Uint8Array {
  const b = new Uint8Array(FLOCK_SIZE);
  const dv = new DataView(b.buffer);
  dv.setInt16(0, type, true);
  dv.setInt16(2, SEEK_SET, true);
  dv.setBigInt64(8, start, true);
  dv.setBigInt64(16, len, true);
  // l_pid must be 0 for the OFD commands.
  return b;
}

export function decodeFlock(b: Uint8Array): { type: number; start: bigint; len: bigint; pid: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { type: dv.getInt16(0, true), start: dv.getBigInt64(8, true), len: dv.getBigInt64(16, true), pid: dv.getInt32(24, true) };
}

/** glibc's makedev (sys/sysmacros.h): the 64-bit dev_t of a major/minor pair. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}
