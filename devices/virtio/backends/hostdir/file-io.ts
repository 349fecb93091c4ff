/**
 * I/O on files the host-directory backend opened: zero-copy preadv/pwritev
 * between the file and guest memory, buffer reads and writes, directory
 * listing with getdents64 cookies, fsync, open-file-description locks, lseek
 * and fallocate. HostDir checks access (read-only share, closed file) and
 * delegates here. I/O worker only; one FileIo per HostDir (it owns reusable
 * buffers). Failures throw FsError with the host errno.
 */
import type { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import type { Segment } from '../../queue/types.js';
import { IovecArray, advanceCursor, skipEmpty, type SegmentCursor } from '../iovec.js';
import { fail } from './errors.js';
import type { Node } from './nodes.js';
import * as S from './sys.js';
import type { DirEntry, LockInfo, LockRange, OpenMode } from './types.js';

const INT64_MAX = (1n << 63n) - 1n;
/** getdents64 buffer: 32 KiB holds ~1000 typical entries. */
const DIRENT_BUFFER = 32 * 1024;
/** struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; } */
const DIRENT_NAME = 19;
const DOT = 0x2e;
/** fallocate modes a share accepts (linux/falloc.h). */
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
const FALLOC_MODES = new Set([0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]);

/** A file or directory the backend opened for I/O. Holds a reference on its node until closed (HostDir.close). */
export class OpenFile {
  closed = false;

  constructor(readonly fd: number, readonly node: Node, readonly mode: OpenMode) {}

  get readable(): boolean {
    return this.mode.access !== 'write';
  }

  get writable(): boolean {
    return this.mode.access !== 'read';
  }
}

export class FileIo {
  private readonly iov = new IovecArray();
  private readonly dirents = new Uint8Array(DIRENT_BUFFER);
  private readonly direntView = new DataView(this.dirents.buffer);

  readv(file: OpenFile, offset: bigint, memory: GuestMemory, segments: readonly Segment[]): number {
    if (!file.readable) fail(S.EBADF, 'read', 'not open for reading');
    return this.transfer('read', file.fd, offset, memory, segments);
  }

  writev(file: OpenFile, offset: bigint, memory: GuestMemory, segments: readonly Segment[]): number {
    if (!file.writable) fail(S.EBADF, 'write', 'not open for writing');
    return this.transfer('write', file.fd, offset, memory, segments);
  }

  read(file: OpenFile, offset: bigint, buf: Uint8Array): number {
    if (!file.readable) fail(S.EBADF, 'read', 'not open for reading');
    checkOffset(offset, 'read');
    let done = 0;
    while (done < buf.length) {
      const n = S.pread(file.fd, buf.subarray(done), buf.length - done, offset + BigInt(done));
      if (n < 0) {
        const e = S.errno();
        if (e === S.EINTR) continue;
        if (done > 0) break;
        fail(e, 'read');
      }
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  write(file: OpenFile, offset: bigint, data: Uint8Array): number {
    if (!file.writable) fail(S.EBADF, 'write', 'not open for writing');
    checkOffset(offset, 'write');
    let done = 0;
    while (done < data.length) {
      const n = S.pwrite(file.fd, data.subarray(done), data.length - done, offset + BigInt(done));
      if (n < 0) {
        const e = S.errno();
        if (e === S.EINTR) continue;
        if (done > 0) break;
        fail(e, 'write');
      }
      if (n === 0) fail(S.EIO, 'write', 'no progress');
      done += n;
    }
    return done;
  }

  /**
   * Positions directory `file` at `cookie` and calls `visit` per entry until it
   * returns false or the listing ends. `idOf` maps a d_ino to the guest's inode
   * number; "." and ".." get `selfId` and `parentId`.
   */
  readdir(file: OpenFile, cookie: bigint, idOf: (ino: bigint) => bigint, selfId: bigint, parentId: bigint, visit: (e: DirEntry) => boolean): void {
    // Cookies are the host's d_off values (s64); the protocol carries them as u64.
    if (S.lseek(file.fd, BigInt.asIntN(64, cookie), S.SEEK_SET) === -1) fail(S.errno(), 'readdir', `offset ${cookie}`);
    const buf = this.dirents;
    const dv = this.direntView;
    for (;;) {
      const n = S.getdents64(file.fd, buf, buf.length);
      if (n < 0) {
        const e = S.errno();
        if (e === S.EINTR) continue;
        fail(e, 'readdir');
      }
      if (n === 0) return;
      for (let at = 0; at < n;) {
        const reclen = dv.getUint16(at + 16, true);
        if (reclen <= DIRENT_NAME || at + reclen > n) fail(S.EIO, 'readdir', `bad dirent record length ${reclen}`);
        let end = at + DIRENT_NAME;
        while (end < at + reclen && buf[end] !== 0) end++;
        const name = buf.slice(at + DIRENT_NAME, end);
        const isDot = name.length === 1 && name[0] === DOT;
        const isDotDot = name.length === 2 && name[0] === DOT && name[1] === DOT;
        const entry: DirEntry = {
          id: isDot ? selfId : isDotDot ? parentId : idOf(dv.getBigUint64(at, true)),
          offset: BigInt.asUintN(64, dv.getBigInt64(at + 8, true)),
          type: buf[at + 18]!,
          name,
        };
        at += reclen;
        if (!visit(entry)) return;
      }
    }
  }

  fsync(file: OpenFile, dataOnly: boolean): void {
    for (;;) {
      if ((dataOnly ? S.fdatasync(file.fd) : S.fsync(file.fd)) === 0) return;
      const e = S.errno();
      if (e !== S.EINTR) fail(e, 'fsync');
    }
  }

  setlk(file: OpenFile, lock: LockRange): boolean {
    const fl = encodeLock(lock, 'lock');
    for (;;) {
      if (S.fcntlLock(file.fd, S.F_OFD_SETLK, fl) === 0) return true;
      const e = S.errno();
      if (e === S.EINTR) continue;
      if (e === S.EAGAIN || e === S.EACCES) return false;
      fail(e, 'lock');
    }
  }

  getlk(file: OpenFile, lock: LockRange): LockInfo {
    const fl = encodeLock(lock, 'getlock');
    if (lock.type === S.F_UNLCK) fail(S.EINVAL, 'getlock', 'F_UNLCK');
    for (;;) {
      if (S.fcntlLock(file.fd, S.F_OFD_GETLK, fl) === 0) break;
      const e = S.errno();
      if (e !== S.EINTR) fail(e, 'getlock');
    }
    const got = S.decodeFlock(fl);
    return { type: got.type, start: got.start, length: got.len, pid: got.pid };
  }

  lseek(file: OpenFile, offset: bigint, whence: number): bigint {
    if (!Number.isInteger(whence) || whence < S.SEEK_SET || whence > S.SEEK_HOLE) fail(S.EINVAL, 'lseek', `whence ${whence}`);
    if (offset > INT64_MAX || offset < -INT64_MAX - 1n) fail(S.EINVAL, 'lseek', `offset ${offset}`);
    const r = S.lseek(file.fd, offset, whence);
    if (r === -1) fail(S.errno(), 'lseek');
    return BigInt(r);
  }

  fallocate(file: OpenFile, mode: number, offset: bigint, length: bigint): void {
    if (!file.writable) fail(S.EBADF, 'fallocate', 'not open for writing');
    if (!FALLOC_MODES.has(mode)) fail(S.EOPNOTSUPP, 'fallocate', `mode 0x${mode.toString(16)}`);
    if (offset < 0n || length <= 0n || offset + length > INT64_MAX) fail(S.EINVAL, 'fallocate', `${length} bytes at ${offset}`);
    for (;;) {
      if (S.fallocate(file.fd, mode, offset, length) === 0) return;
      const e = S.errno();
      if (e !== S.EINTR) fail(e, 'fallocate');
    }
  }

  /** Moves bytes between guest `segments` and the file from `offset`; returns the bytes moved (short at EOF, or on a late error). */
  private transfer(op: 'read' | 'write', fd: number, offset: bigint, memory: GuestMemory, segments: readonly Segment[]): number {
    checkOffset(offset, op);
    const cursor: SegmentCursor = { index: 0, offset: 0 };
    skipEmpty(segments, cursor);
    let done = 0;
    while (cursor.index < segments.length) {
      this.iov.fill(memory, segments, cursor);
      const pos = offset + BigInt(done);
      const n = op === 'read' ? S.preadv(fd, this.iov.buffer, this.iov.count, pos) : S.pwritev(fd, this.iov.buffer, this.iov.count, pos);
      if (n < 0) {
        const e = S.errno();
        if (e === S.EINTR) continue;
        // POSIX: a transfer that made progress reports it; the error shows up on the next call.
        if (done > 0) break;
        fail(e, op);
      }
      if (n === 0) {
        if (op === 'write') fail(S.EIO, op, 'no progress');
        break; // end of file
      }
      advanceCursor(segments, cursor, n);
      done += n;
    }
    return done;
  }
}

function checkOffset(offset: bigint, op: string): void {
  if (offset < 0n || offset > INT64_MAX) fail(S.EINVAL, op, `offset ${offset}`);
}

/** A struct flock for F_OFD_*: the range checked to fit off_t (start + length - 1 must too). */
function encodeLock(lock: LockRange, op: string): Uint8Array {
  if (lock.type !== S.F_RDLCK && lock.type !== S.F_WRLCK && lock.type !== S.F_UNLCK) fail(S.EINVAL, op, `lock type ${lock.type}`);
  if (lock.start < 0n || lock.length < 0n || lock.start > INT64_MAX || lock.length > INT64_MAX) fail(S.EINVAL, op, 'lock range');
  if (lock.length > 0n && lock.start + lock.length - 1n > INT64_MAX) fail(S.EOVERFLOW, op, 'lock range');
  return S.encodeFlock(lock.type, lock.start, lock.length);
}
