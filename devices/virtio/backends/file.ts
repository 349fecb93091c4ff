/**
 * Disk images for virtio-blk: opening and locking them (main thread), and
 * zero-copy sector I/O on an open fd (I/O worker).
 */
import { fstatSync, statSync, type Stats } from 'node:fs';
import { ConfigError, errnoName, HostError } from '../../../lib/errors.js';
import * as ffi from '../../../lib/kvm/ffi.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { BlockBackend } from '../block/backend.js';
import type { Segment } from '../queue/types.js';
import { IovecArray, advanceCursor, skipEmpty, type SegmentCursor } from './iovec.js';
import * as libc from './libc.js';

/** Size of one virtio-blk sector; images must be a whole number of them. */
const SECTOR_SIZE = 512;
/** Zeros written per pwrite when fallocate cannot zero a range. */
const ZERO_CHUNK = 64 * 1024;
/**
 * open(2) O_NONBLOCK (same value on x86-64 and arm64 Linux). An open of a FIFO
 * for reading blocks until a writer appears; with O_NONBLOCK it returns at once,
 * so a path swapped for a FIFO between stat and open cannot hang the event loop.
 * Regular files and block devices ignore the flag for reads and writes.
 */
const O_NONBLOCK = 0o4000;

/** The syscalls FileBackend makes; tests substitute a recording wrapper. */
export interface FileSyscalls {
  preadv(fd: number, iov: Uint8Array, iovcnt: number, offset: number): number;
  pwritev(fd: number, iov: Uint8Array, iovcnt: number, offset: number): number;
  pwrite(fd: number, buf: Uint8Array, count: number, offset: number): number;
  fdatasync(fd: number): number;
  fallocate(fd: number, mode: number, offset: number, len: number): number;
  /** The errno of the call that just failed. */
  errno(): number;
}

/** The real libc calls. */
export const LIBC_FILE_SYSCALLS: FileSyscalls = {
  preadv: libc.preadv,
  pwritev: libc.pwritev,
  pwrite: libc.pwrite,
  fdatasync: libc.fdatasync,
  fallocate: libc.fallocate,
  errno: libc.errno,
};

/**
 * A {@link BlockBackend} over an open file or block device. I/O worker only:
 * one instance per device (it owns a reusable iovec array).
 *
 * Reads and writes go through preadv/pwritev with iovecs pointing into guest
 * memory, at most IOV_MAX entries per call, looping on short transfers and
 * EINTR. Failures throw HostError. Does NOT own `fd`: whoever opened it
 * ({@link openDiskImage}) closes it.
 */
export class FileBackend implements BlockBackend {
  private readonly iov = new IovecArray();
  private zeros: Uint8Array | null = null;

  constructor(readonly fd: number, private readonly sys: FileSyscalls = LIBC_FILE_SYSCALLS) {}

  readv(offset: number, segments: readonly Segment[], memory: GuestMemory): void {
    this.transfer('preadv', offset, segments, memory);
  }

  writev(offset: number, segments: readonly Segment[], memory: GuestMemory): void {
    this.transfer('pwritev', offset, segments, memory);
  }

  flush(): void {
    this.retry('fdatasync', () => this.sys.fdatasync(this.fd));
  }

  discard(offset: number, length: number): void {
    if (length === 0) return;
    const mode = libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE;
    const e = this.tryFallocate(mode, offset, length);
    // Discard is a hint (§5.2.6.2: the device MAY deallocate): a filesystem without hole punching just keeps the data.
    if (e !== 0 && !unsupported(e)) throw new HostError('fallocate(PUNCH_HOLE)', e, `${length} bytes at ${offset}`);
  }

  writeZeroes(offset: number, length: number, unmap: boolean): void {
    if (length === 0) return;
    // With unmap the range may be deallocated: a punched hole reads as zeros, and frees space.
    // Without it the blocks must stay allocated, which ZERO_RANGE does.
    const modes = unmap
      ? [libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, libc.FALLOC_FL_ZERO_RANGE | libc.FALLOC_FL_KEEP_SIZE]
      : [libc.FALLOC_FL_ZERO_RANGE | libc.FALLOC_FL_KEEP_SIZE];
    for (const mode of modes) {
      const e = this.tryFallocate(mode, offset, length);
      if (e === 0) return;
      if (!unsupported(e)) throw new HostError('fallocate', e, `zeroing ${length} bytes at ${offset}`);
    }
    this.writeZeroBytes(offset, length);
  }

  /** Moves all bytes of `segments` between guest memory and the file at `offset`. */
  private transfer(call: 'preadv' | 'pwritev', offset: number, segments: readonly Segment[], memory: GuestMemory): void {
    const cursor: SegmentCursor = { index: 0, offset: 0 };
    skipEmpty(segments, cursor);
    let pos = offset;
    while (cursor.index < segments.length) {
      this.iov.fill(memory, segments, cursor);
      const n = this.sys[call](this.fd, this.iov.buffer, this.iov.count, pos);
      if (n < 0) {
        const e = this.sys.errno();
        if (e === libc.EINTR) continue;
        throw new HostError(call, e, `${this.iov.bytes} bytes at offset ${pos} of fd ${this.fd}`);
      }
      if (n === 0) {
        // pwritev returning 0 for a non-empty request would loop forever.
        if (call === 'pwritev') throw new HostError(call, libc.EIO, `no progress at offset ${pos} of fd ${this.fd}`);
        // End of file (the image shrank under us): the rest of the disk reads as zeros.
        zeroRest(memory, segments, cursor);
        return;
      }
      advanceCursor(segments, cursor, n);
      pos += n;
    }
  }

  /** fallocate, retried on EINTR; returns 0 or the errno. */
  private tryFallocate(mode: number, offset: number, length: number): number {
    for (;;) {
      if (this.sys.fallocate(this.fd, mode, offset, length) === 0) return 0;
      const e = this.sys.errno();
      if (e !== libc.EINTR) return e;
    }
  }

  /** Last resort for write-zeroes: write a zero buffer over the range. */
  private writeZeroBytes(offset: number, length: number): void {
    const zeros = (this.zeros ??= new Uint8Array(ZERO_CHUNK));
    let done = 0;
    while (done < length) {
      const want = Math.min(ZERO_CHUNK, length - done);
      const n = this.sys.pwrite(this.fd, zeros, want, offset + done);
      if (n < 0) {
        const e = this.sys.errno();
        if (e === libc.EINTR) continue;
        throw new HostError('pwrite', e, `zeroing ${want} bytes at ${offset + done}`);
      }
      if (n === 0) throw new HostError('pwrite', libc.EIO, `no progress zeroing at ${offset + done}`);
      done += n;
    }
  }

  private retry(name: string, call: () => number): void {
    for (;;) {
      if (call() === 0) return;
      const e = this.sys.errno();
      if (e !== libc.EINTR) throw new HostError(name, e, `fd ${this.fd}`);
    }
  }
}

/** fallocate errnos that mean "this filesystem cannot do that mode". */
function unsupported(e: number): boolean {
  return e === libc.EOPNOTSUPP || e === libc.ENOSYS || e === libc.EINVAL;
}

/** Zero-fills guest segments from `cursor` to the end. */
function zeroRest(memory: GuestMemory, segments: readonly Segment[], cursor: SegmentCursor): void {
  for (let i = cursor.index, off = cursor.offset; i < segments.length; i++, off = 0) {
    const seg = segments[i]!;
    if (seg.len > off) memory.fill(seg.addr + off, seg.len - off, 0);
  }
}

/** An open disk image. `fd` is process-wide: pass the number to the I/O worker. */
export interface DiskImage {
  readonly fd: number;
  /** Size in bytes: a positive multiple of 512. */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Closes the fd (which releases its lock). Idempotent. Only once no thread uses the fd any more. */
  close(): void;
}

/**
 * Opens a disk image for a virtio-blk device (main thread).
 *
 * Checks with stat(2) that `path` is a regular file or block device (a FIFO
 * would block the open), opens it O_RDWR (or O_RDONLY with `readOnly`),
 * O_CLOEXEC and O_NONBLOCK, re-checks the type with fstat(2), then takes
 * a non-blocking flock: LOCK_EX for a writable image, LOCK_SH for a read-only
 * one, so two VMs never write one image, and no VM writes an image another reads.
 * Accepts a regular file or a block device whose size is a positive multiple of 512.
 *
 * Throws ConfigError naming `field` (e.g. `drives[0].path`) and the fix for
 * every problem with the file (missing, a directory, no permission, read-only
 * filesystem, bad size, locked). Nothing stays open when it throws.
 */
export function openDiskImage(path: string, opts: { readOnly: boolean; field: string }): DiskImage {
  const { readOnly, field } = opts;
  // A C string ends at the first NUL: 'a.img\0b' would silently open 'a.img'.
  if (path.length === 0 || path.includes('\0')) throw new ConfigError(field, 'must be a non-empty path without NUL characters', path);
  // Check the type before opening: open(2) of a FIFO (or some character devices) blocks the calling thread.
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).errno;
    throw openError(path, typeof errno === 'number' ? -errno : libc.EIO, readOnly, field);
  }
  checkImageType(st, path, field);
  // O_NONBLOCK covers the race where the path becomes a FIFO after the stat; the fstat below re-checks.
  const fd = ffi.open(path, (readOnly ? ffi.O_RDONLY : ffi.O_RDWR) | ffi.O_CLOEXEC | O_NONBLOCK, 0);
  if (fd < 0) throw openError(path, ffi.errno(), readOnly, field);
  try {
    checkImageType(fstatSync(fd), path, field);
    lockImage(fd, path, readOnly, field);
    const sizeBytes = imageSize(fd, path, field);
    let open = true;
    return {
      fd,
      sizeBytes,
      readOnly,
      close: () => {
        if (open) ffi.close(fd);
        open = false;
      },
    };
  } catch (e) {
    ffi.close(fd);
    throw e;
  }
}

/** Throws ConfigError naming `field` unless `st` is a regular file or a block device. */
function checkImageType(st: Stats, path: string, field: string): void {
  if (st.isFile() || st.isBlockDevice()) return;
  if (st.isDirectory()) throw new ConfigError(field, `'${path}' is a directory; give the path of a disk image file`, path);
  const kind = st.isFIFO() ? 'a FIFO (named pipe)' : st.isSocket() ? 'a socket' : st.isCharacterDevice() ? 'a character device' : 'not a regular file';
  throw new ConfigError(field, `'${path}' is ${kind}; a disk image must be a regular file or a block device`, path);
}

/** The ConfigError for a failed open(2) (exported for tests: root never sees EACCES). */
export function openError(path: string, errno: number, readOnly: boolean, field: string): ConfigError {
  const cause = new HostError('open', errno, path);
  const mode = readOnly ? 'read-only' : 'read-write';
  switch (errno) {
    case libc.ENOENT:
      return new ConfigError(field, `disk image '${path}' does not exist; check the path (relative paths resolve against the current directory)`, path, cause);
    case libc.ENOTDIR:
    case libc.ELOOP:
      return new ConfigError(field, `'${path}' is not a valid path (${errnoName(errno)}); check each directory in it`, path, cause);
    case libc.EISDIR:
      return new ConfigError(field, `'${path}' is a directory; give the path of a disk image file`, path, cause);
    case libc.EACCES:
    case libc.EPERM:
      return new ConfigError(field, readOnly
        ? `permission denied opening '${path}'; grant this process read permission on it`
        : `permission denied opening '${path}' read-write; set readOnly: true, or grant this process write permission on it`, path, cause);
    case libc.EROFS:
      return new ConfigError(field, `'${path}' is on a read-only filesystem; set readOnly: true`, path, cause);
    default:
      return new ConfigError(field, `cannot open disk image '${path}' ${mode}: ${errnoName(errno)}`, path, cause);
  }
}

function lockImage(fd: number, path: string, readOnly: boolean, field: string): void {
  const op = (readOnly ? libc.LOCK_SH : libc.LOCK_EX) | libc.LOCK_NB;
  for (;;) {
    if (libc.flock(fd, op) === 0) return;
    const e = libc.errno();
    if (e === libc.EINTR) continue;
    const cause = new HostError('flock', e, path);
    if (e === libc.EWOULDBLOCK) {
      throw new ConfigError(field, readOnly
        ? `disk image '${path}' is locked by another VM or process that opened it writable; stop it, or give this VM its own copy`
        : `disk image '${path}' is locked by another VM or process; stop it, give this VM its own copy, or set readOnly: true on every VM sharing it`,
      path, cause);
    }
    throw new ConfigError(field, `cannot lock disk image '${path}': ${errnoName(e)}`, path, cause);
  }
}

/** Size of the open image in bytes, checked to be a positive multiple of 512. */
function imageSize(fd: number, path: string, field: string): number {
  const st = fstatSync(fd);
  let size: number;
  if (st.isFile()) {
    size = st.size;
  } else if (st.isBlockDevice()) {
    // st_size is 0 for block devices; the end offset is their size.
    size = libc.lseek(fd, 0, libc.SEEK_END);
    if (size < 0) throw new ConfigError(field, `cannot get the size of block device '${path}'`, path, new HostError('lseek', libc.errno(), path));
  } else {
    checkImageType(st, path, field);
    throw new ConfigError(field, `'${path}' is not a regular file or block device`, path);
  }
  if (size === 0) throw new ConfigError(field, `disk image '${path}' is empty; give it a size first (e.g. truncate -s 64M '${path}')`, path);
  if (size % SECTOR_SIZE !== 0) {
    const up = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
    throw new ConfigError(field, `disk image '${path}' is ${size} bytes, not a multiple of ${SECTOR_SIZE}; pad it (truncate -s ${up} '${path}')`, size);
  }
  return size;
}
