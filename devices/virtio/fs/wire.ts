/**
 * FUSE wire format (linux/fuse.h, protocol 7.31), decoded and encoded only
 * here: the in and out headers, each opcode's argument struct, and the reply
 * structs (fuse_attr, fuse_entry_out, …). Little-endian throughout.
 *
 * Guest data is hostile: ArgReader bounds every read by the copied-in message
 * and every reply field by the reply buffer; a short message, an unterminated
 * or bad name, or a reply that does not fit becomes a FuseError with the
 * errno the server answers with. Pure: no I/O, no tables.
 */
import type { Stat } from '../backends/hostdir/index.js';
import * as F from './constants.js';
import { withoutStack } from '../../../lib/errors.js';

/** A request refused with `errno` (a positive Linux errno) before or instead of reaching the backend. */
export class FuseError extends Error {
  constructor(readonly errno: number, message = '') {
    super(message);
    this.name = 'FuseError';
  }
}

/** Throws FuseError(errno), without a stack trace (the guest's errno reply; see withoutStack). Typed `never` so it ends a branch. */
export const err = (errno: number, why = ''): never => {
  throw withoutStack(() => new FuseError(errno, why));
};

// ---- fuse_in_header / fuse_out_header ----

/** fuse_in_header: len[4] opcode[4] unique[8] nodeid[8] uid[4] gid[4] pid[4] padding[4] (IN_HEADER_SIZE bytes). */
export interface InHeader {
  /** Length of the whole request, header included (unchecked here). */
  readonly len: number;
  readonly opcode: number;
  readonly unique: bigint;
  readonly nodeid: bigint;
  readonly uid: number;
  readonly gid: number;
}

/**
 * Decodes a fuse_in_header from the first IN_HEADER_SIZE bytes under `dv`
 * (the server's reused header buffer: no allocation but the result).
 */
export function readInHeader(dv: DataView): InHeader {
  return {
    len: dv.getUint32(0, true),
    opcode: dv.getUint32(4, true),
    unique: dv.getBigUint64(8, true),
    nodeid: dv.getBigUint64(16, true),
    uid: dv.getUint32(24, true),
    gid: dv.getUint32(28, true),
  };
}

/** Writes fuse_out_header { len[4], error[4] (-errno), unique[8] } at the start of `reply`. */
export function writeOutHeader(reply: ReplyBuf, len: number, errno: number, unique: bigint): void {
  reply.dv.setUint32(0, len, true);
  reply.dv.setInt32(4, -errno, true);
  reply.dv.setBigUint64(8, unique, true);
}

// ---- the argument reader ----

/**
 * A reader over the copied-in request (after the in header). Out-of-bounds
 * reads are EINVAL. The server keeps one and copies each request's argument
 * bytes into its buffer (reset() then bounds the reads by their length), so
 * a request allocates no buffer of its own. Nothing it returns points into
 * that buffer: names and byte strings are copies, safe to keep past the
 * request.
 */
export class ArgReader {
  private at = 0;
  private end = 0;
  /** Room for `capacity` argument bytes; a request copies its own into the start. */
  readonly buf: Uint8Array;
  private readonly dv: DataView;
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
    this.dv = new DataView(this.buf.buffer);
  }
  /** Starts reading a request whose `length` argument bytes are at the start of `buf`. */
  reset(length: number): this {
    if (!Number.isInteger(length) || length < 0 || length > this.buf.length) throw new RangeError(`argument length ${length} outside 0..${this.buf.length}`);
    this.at = 0;
    this.end = length;
    return this;
  }
  private need(n: number): number {
    if (this.at + n > this.end) err(F.EINVAL, 'request too short');
    const a = this.at;
    this.at += n;
    return a;
  }
  u32(): number { return this.dv.getUint32(this.need(4), true); }
  u64(): bigint { return this.dv.getBigUint64(this.need(8), true); }
  skip(n: number): void { this.need(n); }
  /** A NUL-terminated string inside the message (the NUL is consumed, not returned). */
  cstr(): Uint8Array {
    const start = this.at;
    const nul = this.buf.subarray(start, this.end).indexOf(0);
    if (nul < 0) err(F.EINVAL, 'unterminated name');
    this.at = start + nul + 1;
    return this.buf.slice(start, start + nul);
  }
  /** A path component: non-empty, no '/', not "." or "..", at most 255 bytes. */
  name(): Uint8Array {
    const b = this.cstr();
    if (b.length === 0 || b.includes(0x2f)) err(F.EINVAL, 'bad name');
    if (b.length > 255) err(F.ENAMETOOLONG);
    if (b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))) err(F.EINVAL, 'dot name');
    return b;
  }
  /** Everything left. */
  rest(): Uint8Array {
    const r = this.buf.slice(this.at, this.end);
    this.at = this.end;
    return r;
  }
  get remaining(): number { return this.end - this.at; }
}

// ---- the argument structs, one decoder per opcode (fields the server ignores are skipped) ----

/** fuse_init_in: major, minor, max_readahead, flags. */
export function initIn(a: ArgReader): { major: number; minor: number; flags: number } {
  const major = a.u32();
  const minor = a.u32();
  a.u32(); // max_readahead
  return { major, minor, flags: a.u32() };
}

/** fuse_forget_in: nlookup. */
export function forgetIn(a: ArgReader): bigint {
  return a.u64();
}

/** fuse_batch_forget_in { count, dummy } then count fuse_forget_one { nodeid, nlookup }; count checked against the message. */
export function batchForgetIn(a: ArgReader): Array<{ nodeid: bigint; nlookup: bigint }> {
  const count = a.u32();
  a.u32();
  if (count > a.remaining / 16) err(F.EINVAL, 'batch forget count');
  const out: Array<{ nodeid: bigint; nlookup: bigint }> = [];
  for (let i = 0; i < count; i++) out.push({ nodeid: a.u64(), nlookup: a.u64() });
  return out;
}

/** FUSE_SYMLINK: name\0 target\0. */
export function symlinkIn(a: ArgReader): { name: Uint8Array; target: Uint8Array } {
  const name = a.name();
  return { name, target: a.cstr() };
}

/** fuse_mknod_in { mode, rdev, umask, padding } then name\0. */
export function mknodIn(a: ArgReader): { mode: number; umask: number; name: Uint8Array } {
  const mode = a.u32();
  a.u32(); // rdev
  const umask = a.u32();
  a.u32();
  return { mode, umask, name: a.name() };
}

/** fuse_mkdir_in { mode, umask } then name\0. */
export function mkdirIn(a: ArgReader): { mode: number; umask: number; name: Uint8Array } {
  const mode = a.u32();
  const umask = a.u32();
  return { mode, umask, name: a.name() };
}

/**
 * fuse_rename_in { newdir } (RENAME) or fuse_rename2_in { newdir, flags,
 * padding } (RENAME2); the two names (old\0 new\0) follow and are read with
 * ArgReader.name() after newdir is looked up.
 */
export function renameIn(a: ArgReader, v2: boolean): { newdir: bigint; flags: number } {
  const newdir = a.u64();
  let flags = 0;
  if (v2) {
    flags = a.u32();
    a.u32();
  }
  return { newdir, flags };
}

/** fuse_open_in { flags, open_flags } (OPEN, OPENDIR): flags. */
export function openIn(a: ArgReader): number {
  return a.u32();
}

/** fuse_create_in { flags, mode, umask, open_flags } then name\0. */
export function createIn(a: ArgReader): { flags: number; mode: number; umask: number; name: Uint8Array } {
  const flags = a.u32();
  const mode = a.u32();
  const umask = a.u32();
  a.u32();
  return { flags, mode, umask, name: a.name() };
}

/** The head of fuse_read_in / fuse_write_in / fuse_readdir: fh, offset, size (the rest is not used). */
export function ioIn(a: ArgReader): { fh: bigint; offset: bigint; size: number } {
  const fh = a.u64();
  const offset = a.u64();
  return { fh, offset, size: a.u32() };
}

/** fuse_release_in / fuse_flush_in: fh (first field). */
export function fhIn(a: ArgReader): bigint {
  return a.u64();
}

/** fuse_fsync_in { fh, fsync_flags }: bit 0 is datasync. */
export function fsyncIn(a: ArgReader): { fh: bigint; datasync: boolean } {
  const fh = a.u64();
  return { fh, datasync: (a.u32() & 1) !== 0 };
}

/** fuse_setxattr_in { size, flags } then name\0 value[size]; size at most 64 KiB and within the message. */
export function setxattrIn(a: ArgReader): { name: Uint8Array; value: Uint8Array; flags: number } {
  const size = a.u32();
  const flags = a.u32();
  const name = a.cstr();
  if (size > 65536 || size > a.remaining) err(F.EINVAL, 'xattr size');
  return { name, value: a.rest().subarray(0, size), flags };
}

/** fuse_getxattr_in { size, padding } (GETXATTR then name\0, LISTXATTR nothing more): size 0 asks for the length. */
export function getxattrIn(a: ArgReader, withName: boolean): { size: number; name: Uint8Array | null } {
  const size = a.u32();
  a.u32();
  return { size, name: withName ? a.cstr() : null };
}

/** fuse_access_in { mask, padding }: mask. */
export function accessIn(a: ArgReader): number {
  return a.u32();
}

/** fuse_fallocate_in { fh, offset, length, mode }. */
export function fallocateIn(a: ArgReader): { fh: bigint; offset: bigint; length: bigint; mode: number } {
  const fh = a.u64();
  const offset = a.u64();
  const length = a.u64();
  return { fh, offset, length, mode: a.u32() };
}

/** fuse_lseek_in { fh, offset, whence }. */
export function lseekIn(a: ArgReader): { fh: bigint; offset: bigint; whence: number } {
  const fh = a.u64();
  const offset = a.u64();
  return { fh, offset, whence: a.u32() };
}

/** fuse_setattr_in: the fields FATTR_* in `valid` select (lock_owner, ctime and padding skipped). */
export interface SetattrIn {
  readonly valid: number;
  readonly fh: bigint;
  readonly size: bigint;
  readonly atime: bigint;
  readonly mtime: bigint;
  readonly atimensec: number;
  readonly mtimensec: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** Decodes fuse_setattr_in (88 bytes). */
export function setattrIn(a: ArgReader): SetattrIn {
  const valid = a.u32();
  a.u32();
  const fh = a.u64();
  const size = a.u64();
  a.u64(); // lock_owner
  const atime = a.u64();
  const mtime = a.u64();
  a.u64(); // ctime
  const atimensec = a.u32();
  const mtimensec = a.u32();
  a.u32(); // ctimensec
  const mode = a.u32();
  a.u32();
  const uid = a.u32();
  const gid = a.u32();
  return { valid, fh, size, atime, mtime, atimensec, mtimensec, mode, uid, gid };
}

// ---- the reply buffer and reply structs ----

/** Writes the reply payload (after the out header) into a reusable buffer; a reply past its size is ERANGE. */
export class ReplyBuf {
  readonly buf: Uint8Array;
  readonly dv: DataView;
  len = F.OUT_HEADER_SIZE;
  constructor(size: number) {
    this.buf = new Uint8Array(size);
    this.dv = new DataView(this.buf.buffer);
  }
  reset(): void { this.len = F.OUT_HEADER_SIZE; }
  room(n: number): number {
    if (this.len + n > this.buf.length) err(F.ERANGE, 'reply too large');
    const a = this.len;
    this.buf.fill(0, a, a + n);
    this.len += n;
    return a;
  }
  u32(v: number): this { this.dv.setUint32(this.room(4), v >>> 0, true); return this; }
  u64(v: bigint): this { this.dv.setBigUint64(this.room(8), BigInt.asUintN(64, v), true); return this; }
  u16(v: number): this { this.dv.setUint16(this.room(2), v, true); return this; }
  bytes(b: Uint8Array): this { this.buf.set(b, this.room(b.length)); return this; }
  zero(n: number): this { this.room(n); return this; }
}

/** fuse_attr (ATTR_SIZE bytes); rdev in the kernel's new_encode_dev form. */
export function writeAttr(r: ReplyBuf, st: Stat): void {
  r.u64(st.id).u64(st.size).u64(st.blocks)
    .u64(st.atime.sec).u64(st.mtime.sec).u64(st.ctime.sec)
    .u32(st.atime.nsec).u32(st.mtime.nsec).u32(st.ctime.nsec)
    .u32(st.mode).u32(st.nlink).u32(st.uid).u32(st.gid)
    .u32(((st.rdevMajor & 0xfff) << 8) | (st.rdevMinor & 0xff) | ((st.rdevMinor & ~0xff) << 12))
    .u32(st.blksize).u32(0);
}

/**
 * fuse_entry_out: nodeid, generation 0, entry and attr timeouts of 1 s, then
 * the attr (zeros without one). Nodeid 0 is a negative entry the kernel does
 * not cache.
 */
export function writeEntry(r: ReplyBuf, nodeid: bigint, st: Stat | null): void {
  r.u64(nodeid).u64(0n).u64(1n).u64(1n).u32(0).u32(0);
  if (st) writeAttr(r, st);
  else r.zero(F.ATTR_SIZE);
}

/** fuse_attr_out: attr timeout of 1 s, then the attr. */
export function writeAttrOut(r: ReplyBuf, st: Stat): void {
  r.u64(1n).u32(0).u32(0);
  writeAttr(r, st);
}

/** fuse_open_out: fh, open_flags (FOPEN_*), padding. */
export function writeOpenOut(r: ReplyBuf, fh: bigint, openFlags = 0): void {
  r.u64(fh).u32(openFlags).u32(0);
}

/** fuse_dirent: ino, off, namelen, type, name padded to 8 bytes; returns its size (DIRENT_SIZE + padded name). */
export function direntSize(namelen: number): number {
  return F.DIRENT_SIZE + ((namelen + 7) & ~7);
}

/** Writes one fuse_dirent (see direntSize). */
export function writeDirent(r: ReplyBuf, id: bigint, offset: bigint, type: number, name: Uint8Array): void {
  r.u64(id).u64(offset).u32(name.length).u32(type).bytes(name).zero(direntSize(name.length) - F.DIRENT_SIZE - name.length);
}
