/**
 * 9P wire encoding: little-endian integers, strings as u16 length + bytes
 * (no NUL), qids as type[1] version[4] path[8].
 *
 * MessageReader reads a message the guest sent: every read is bounds-checked
 * against the message's own size and throws {@link WireError} past the end,
 * so a length field can never make the server read outside the message.
 * ReplyWriter builds a reply in a growable buffer. Every 9P layout the
 * server knows lives here: the message header (size[4] type[1] tag[2]:
 * readHeader, writeHeader, ReplyWriter.begin/finish), one decoder per
 * T-message body (tversion … tsetattr) and the encoders of the R-message
 * bodies with more than a field or two (rwalk, rgetattr, rstatfs, rdirent).
 * Pure, no I/O.
 */
import type { Stat, Statfs, Timespec } from '../backends/hostdir/index.js';
import { P9_GETATTR_BASIC, P9_GETATTR_BTIME, P9_HEADER_SIZE, P9_QID_SIZE } from './constants.js';

/** Offsets in the 7-byte header every 9P message starts with: size[4] type[1] tag[2]. */
export const P9_HDR_SIZE = 0;
export const P9_HDR_TYPE = 4;
export const P9_HDR_TAG = 5;

/** A message header: the size of the whole message (header included), its type and tag. */
export interface MessageHeader {
  readonly size: number;
  readonly type: number;
  readonly tag: number;
}

/** The header of the message in `bytes` (at least 7 bytes: RangeError otherwise). The size is not checked here. */
export function readHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.length < P9_HEADER_SIZE) throw new RangeError(`a 9P header needs ${P9_HEADER_SIZE} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, P9_HEADER_SIZE);
  return { size: dv.getUint32(P9_HDR_SIZE, true), type: dv.getUint8(P9_HDR_TYPE), tag: dv.getUint16(P9_HDR_TAG, true) };
}

/** Writes `h` over the first 7 bytes of `bytes`. */
export function writeHeader(bytes: Uint8Array, h: MessageHeader): void {
  if (bytes.length < P9_HEADER_SIZE) throw new RangeError(`a 9P header needs ${P9_HEADER_SIZE} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, P9_HEADER_SIZE);
  dv.setUint32(P9_HDR_SIZE, h.size >>> 0, true);
  dv.setUint8(P9_HDR_TYPE, h.type);
  dv.setUint16(P9_HDR_TAG, h.tag, true);
}

/** A T-message ended before one of its fields (or a string ran past the end). */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export class MessageReader {
  private readonly dv: DataView;
  private at: number;

  /** Reads `bytes` (one whole message) from offset `start` (after the header). */
  constructor(private readonly bytes: Uint8Array, start: number) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = start;
  }

  /** Bytes left unread. */
  get remaining(): number {
    return this.bytes.length - this.at;
  }

  private take(n: number, what: string): number {
    if (n > this.bytes.length - this.at) throw new WireError(`${what} runs past the end of the message (${this.remaining} bytes left, ${n} needed)`);
    const at = this.at;
    this.at += n;
    return at;
  }

  u8(): number {
    return this.dv.getUint8(this.take(1, 'u8'));
  }

  u16(): number {
    return this.dv.getUint16(this.take(2, 'u16'), true);
  }

  u32(): number {
    return this.dv.getUint32(this.take(4, 'u32'), true);
  }

  u64(): bigint {
    return this.dv.getBigUint64(this.take(8, 'u64'), true);
  }

  /** A string: u16 length, then that many bytes (returned as a copy; any bytes, NUL included: names are validated later). */
  str(): Uint8Array {
    const len = this.u16();
    const at = this.take(len, 'string');
    return this.bytes.slice(at, at + len);
  }
}

export interface Qid {
  readonly type: number;
  readonly version: number;
  readonly path: bigint;
}

export class ReplyWriter {
  private buf = new Uint8Array(256);
  private dv = new DataView(this.buf.buffer);
  private at = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.at;
  }

  private room(n: number): number {
    if (this.at + n > this.buf.length) {
      const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.at + n));
      bigger.set(this.buf.subarray(0, this.at));
      this.buf = bigger;
      this.dv = new DataView(bigger.buffer);
    }
    const at = this.at;
    this.at += n;
    return at;
  }

  // Each setter calls room() before touching this.dv: room() may replace the buffer and its view.

  u8(v: number): this {
    const at = this.room(1);
    this.dv.setUint8(at, v);
    return this;
  }

  u16(v: number): this {
    const at = this.room(2);
    this.dv.setUint16(at, v, true);
    return this;
  }

  u32(v: number): this {
    const at = this.room(4);
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }

  u64(v: bigint): this {
    const at = this.room(8);
    this.dv.setBigUint64(at, BigInt.asUintN(64, v), true);
    return this;
  }

  /** Raw bytes (no length prefix). */
  raw(bytes: Uint8Array): this {
    const at = this.room(bytes.length); // first: room() may replace this.buf
    this.buf.set(bytes, at);
    return this;
  }

  /** A string of at most 65535 bytes (callers bound what they echo). */
  str(bytes: Uint8Array): this {
    if (bytes.length > 0xffff) throw new RangeError(`9P string of ${bytes.length} bytes`);
    this.u16(bytes.length);
    return this.raw(bytes);
  }

  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }

  /** Starts a message: empties the writer and reserves the header (filled by finish()). */
  begin(): this {
    this.at = 0;
    return this.u32(0).u8(0).u16(0);
  }

  /**
   * Fills the header of the message begun with begin(): size = bytes written
   * plus `inline` (data the caller places after them itself), type, tag.
   * Returns the size.
   */
  finish(type: number, tag: number, inline = 0): number {
    const size = this.at + inline;
    writeHeader(this.buf, { size, type, tag });
    return size;
  }

  /** Drops everything after the first `length` bytes. */
  truncate(length: number): void {
    if (length < this.at) this.at = length;
  }

  /** Overwrites a u32 already written at `offset`. */
  patchU32(offset: number, v: number): void {
    this.dv.setUint32(offset, v >>> 0, true);
  }

  /** The bytes written (a view: valid until the next write). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.at);
  }
}


// ---- T-message bodies (after the header), one decoder each; fields in wire order ----
// Each reads the whole fixed part of its message; a body that ends early is a WireError (EINVAL).

type R = MessageReader;

/** Tversion: msize[4] version[s]. */
export const tversion = (r: R) => ({ msize: r.u32(), version: r.str() });
/** Tattach: fid[4] afid[4] uname[s] aname[s] n_uname[4]. */
export const tattach = (r: R) => ({ fid: r.u32(), afid: r.u32(), uname: r.str(), aname: r.str(), nUname: r.u32() });
/** Tflush: oldtag[2]. */
export const tflush = (r: R) => ({ oldtag: r.u16() });
/** Twalk: fid[4] newfid[4] nwname[2] nwname*wname[s]; more than `maxNames` names is a WireError before any is read. */
export function twalk(r: R, maxNames: number): { fid: number; newfid: number; names: Uint8Array[] } {
  const fid = r.u32();
  const newfid = r.u32();
  const nwname = r.u16();
  if (nwname > maxNames) throw new WireError(`Twalk of ${nwname} names (max ${maxNames})`);
  const names: Uint8Array[] = [];
  for (let i = 0; i < nwname; i++) names.push(r.str());
  return { fid, newfid, names };
}
/** Tclunk, Tremove, Tstatfs, Treadlink: fid[4]. */
export const tfid = (r: R) => ({ fid: r.u32() });
/** Tmkdir: dfid[4] name[s] mode[4] gid[4]. */
export const tmkdir = (r: R) => ({ dfid: r.u32(), name: r.str(), mode: r.u32(), gid: r.u32() });
/** Tsymlink: fid[4] name[s] symtgt[s] gid[4]. */
export const tsymlink = (r: R) => ({ fid: r.u32(), name: r.str(), target: r.str(), gid: r.u32() });
/** Tmknod: dfid[4] name[s] mode[4] major[4] minor[4] gid[4]. */
export const tmknod = (r: R) => ({ dfid: r.u32(), name: r.str(), mode: r.u32(), major: r.u32(), minor: r.u32(), gid: r.u32() });
/** Tlink: dfid[4] fid[4] name[s]. */
export const tlink = (r: R) => ({ dfid: r.u32(), fid: r.u32(), name: r.str() });
/** Trename: fid[4] dfid[4] name[s]. */
export const trename = (r: R) => ({ fid: r.u32(), dfid: r.u32(), name: r.str() });
/** Trenameat: olddirfid[4] oldname[s] newdirfid[4] newname[s]. */
export const trenameat = (r: R) => ({ oldDirFid: r.u32(), oldName: r.str(), newDirFid: r.u32(), newName: r.str() });
/** Tunlinkat: dirfd[4] name[s] flags[4]. */
export const tunlinkat = (r: R) => ({ dirFid: r.u32(), name: r.str(), flags: r.u32() });
/** Txattrwalk: fid[4] newfid[4] name[s]. */
export const txattrwalk = (r: R) => ({ fid: r.u32(), newfid: r.u32(), name: r.str() });
/** Txattrcreate: fid[4] name[s] attr_size[8] flags[4]. */
export const txattrcreate = (r: R) => ({ fid: r.u32(), name: r.str(), size: r.u64(), flags: r.u32() });
/** Tlopen: fid[4] flags[4]. */
export const tlopen = (r: R) => ({ fid: r.u32(), flags: r.u32() });
/** Tlcreate: fid[4] name[s] flags[4] mode[4] gid[4]. */
export const tlcreate = (r: R) => ({ fid: r.u32(), name: r.str(), flags: r.u32(), perm: r.u32(), gid: r.u32() });
/** Tread, Twrite (its data follows, zero copy), Treaddir: fid[4] offset[8] count[4]. */
export const tio = (r: R) => ({ fid: r.u32(), offset: r.u64(), count: r.u32() });
/** Tfsync: fid[4] datasync[4]. */
export const tfsync = (r: R) => ({ fid: r.u32(), datasync: r.u32() });
/** Tlock: fid[4] type[1] flags[4] start[8] length[8] proc_id[4] client_id[s]. */
export const tlock = (r: R) => ({ fid: r.u32(), type: r.u8(), flags: r.u32(), start: r.u64(), length: r.u64(), procId: r.u32(), clientId: r.str() });
/** Tgetlock: fid[4] type[1] start[8] length[8] proc_id[4] client_id[s]. */
export const tgetlock = (r: R) => ({ fid: r.u32(), type: r.u8(), start: r.u64(), length: r.u64(), procId: r.u32(), clientId: r.str() });
/** Tgetattr: fid[4] request_mask[8]. */
export const tgetattr = (r: R) => ({ fid: r.u32(), requestMask: r.u64() });
/** Tsetattr: fid[4] valid[4] mode[4] uid[4] gid[4] size[8] atime_sec[8] atime_nsec[8] mtime_sec[8] mtime_nsec[8] (seconds signed). */
export const tsetattr = (r: R) => ({
  fid: r.u32(), valid: r.u32(), mode: r.u32(), uid: r.u32(), gid: r.u32(), size: r.u64(),
  atime: { sec: BigInt.asIntN(64, r.u64()), nsec: Number(r.u64()) },
  mtime: { sec: BigInt.asIntN(64, r.u64()), nsec: Number(r.u64()) },
});

// ---- R-message bodies with more than a field or two ----

/** Rgetattr: valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8] blksize[8] blocks[8] 8 times[8] gen[8] data_version[8]. */
export const RGETATTR_SIZE = P9_HEADER_SIZE + 8 + P9_QID_SIZE + 4 * 3 + 8 * 6 + 8 * 8 + 8 * 2;
/** Rstatfs: type[4] bsize[4] blocks[8] bfree[8] bavail[8] files[8] ffree[8] fsid[8] namelen[4]. */
export const RSTATFS_SIZE = P9_HEADER_SIZE + 4 + 4 + 8 * 6 + 4;
/** Rlopen / Rlcreate: qid[13] iounit[4]. */
export const ROPEN_SIZE = P9_HEADER_SIZE + P9_QID_SIZE + 4;
/** A Rreaddir entry without its name: qid[13] offset[8] type[1] name-length[2]. */
export const DIRENT_FIXED = P9_QID_SIZE + 8 + 1 + 2;

/** Rwalk: nwqid[2] nwqid*qid[13]. */
export function rwalk(w: ReplyWriter, qids: readonly Qid[]): void {
  w.u16(qids.length);
  for (const q of qids) w.qid(q);
}

/** Rgetattr (RGETATTR_SIZE): every basic field, btime when known (then P9_GETATTR_BTIME is valid), gen and data_version 0. */
export function rgetattr(w: ReplyWriter, st: Stat, qid: Qid): void {
  const time = (t: Timespec) => w.u64(t.sec).u64(BigInt(t.nsec));
  w.u64(P9_GETATTR_BASIC | (st.btime ? P9_GETATTR_BTIME : 0n)).qid(qid)
    .u32(st.mode).u32(st.uid).u32(st.gid)
    .u64(BigInt(st.nlink)).u64(encodeDev(st.rdevMajor, st.rdevMinor)).u64(st.size).u64(BigInt(st.blksize)).u64(st.blocks);
  time(st.atime);
  time(st.mtime);
  time(st.ctime);
  time(st.btime ?? { sec: 0n, nsec: 0 });
  w.u64(0n).u64(0n); // gen, data_version
}

/** Rstatfs (RSTATFS_SIZE): the 32-bit fields keep the low bits of the host's values. */
export function rstatfs(w: ReplyWriter, st: Statfs): void {
  w.u32(Number(BigInt.asUintN(32, st.type))).u32(Number(BigInt.asUintN(32, st.bsize)))
    .u64(st.blocks).u64(st.bfree).u64(st.bavail).u64(st.files).u64(st.ffree).u64(st.fsid)
    .u32(Number(BigInt.asUintN(32, st.namelen)));
}

/** One Rreaddir entry: qid[13] offset[8] type[1] name[s] (DIRENT_FIXED + name bytes). */
export function rdirent(w: ReplyWriter, qid: Qid, offset: bigint, type: number, name: Uint8Array): void {
  w.qid(qid).u64(offset).u8(type).str(name);
}

/** The 64-bit dev_t of a major/minor pair (glibc makedev; Linux's client decodes it with new_decode_dev). */
export function encodeDev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}
