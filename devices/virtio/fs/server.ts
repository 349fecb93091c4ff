/**
 * The FUSE server behind virtio-fs: one request chain = fuse_in_header + op
 * args in the readable part, fuse_out_header + payload written into the
 * writable part (linux/fuse.h, protocol 7.31). Host access goes through the
 * sandboxed HostDir backend only (openat2 RESOLVE_BENEATH, fd-relative).
 *
 * Guest data is hostile: every length is checked against the chain and the
 * header, every name must be NUL-terminated inside the message and a single
 * path component (the backend checks again), nodeids and fhs are looked up in
 * our tables (unknown: ESTALE / EBADF). Nothing guest-driven throws out of
 * serve(): backend failures become -errno replies.
 *
 * I/O worker thread only.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { FsError, type HostDir, type Node, type OpenFile, type OpenMode, type SetAttr, type Stat, type Timespec } from '../backends/hostdir/index.js';
import { readChain, sliceSegments, writeChain } from '../queue/chain-io.js';
import type { DescriptorChain } from '../queue/types.js';
import * as F from './constants.js';

/** A request refused before reaching the backend. */
class FuseError extends Error {
  constructor(readonly errno: number, message = '') {
    super(message);
  }
}
const err = (errno: number, why = ''): never => {
  throw new FuseError(errno, why);
};

interface Inode {
  readonly nodeid: bigint;
  readonly node: Node;
  /** Lookups the kernel holds (FORGET gives them back). */
  nlookup: bigint;
}

/** A reader over the copied-in request (after the in header). Out-of-bounds reads are EINVAL. */
class ArgReader {
  private at = 0;
  private readonly dv: DataView;
  constructor(private readonly buf: Uint8Array) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number): number {
    if (this.at + n > this.buf.length) err(F.EINVAL, 'request too short');
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
    const end = this.buf.indexOf(0, start);
    if (end < 0) err(F.EINVAL, 'unterminated name');
    this.at = end + 1;
    return this.buf.subarray(start, end);
  }
  /** A path component: non-empty, no '/', not "." or "..". */
  name(): Uint8Array {
    const b = this.cstr();
    if (b.length === 0 || b.includes(0x2f)) err(F.EINVAL, 'bad name');
    if (b.length > 255) err(F.ENAMETOOLONG);
    if (b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))) err(F.EINVAL, 'dot name');
    return b;
  }
  rest(): Uint8Array {
    const r = this.buf.subarray(this.at);
    this.at = this.buf.length;
    return r;
  }
  get remaining(): number { return this.buf.length - this.at; }
}

/** Writes the reply payload (after the out header) into a reusable buffer. */
class ReplyBuf {
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

export interface FuseServerStats {
  requests: number;
  errors: number;
  malformed: number;
  dropped: number;
}

export class FuseServer {
  readonly stats: FuseServerStats = { requests: 0, errors: 0, malformed: 0, dropped: 0 };
  private readonly inodes = new Map<bigint, Inode>();
  private readonly byNode = new Map<Node, Inode>();
  private readonly handles = new Map<bigint, OpenFile>();
  private nextNodeid = 2n;
  private nextFh = 1n;
  private initialized = false;
  private readonly reply = new ReplyBuf(F.MAX_WRITE + 4096);

  constructor(readonly fs: HostDir, readonly maxHandles = F.MAX_HANDLES) {
    this.resetTables();
  }

  /** Live inodes the kernel holds (root included). */
  get inodeCount(): number { return this.inodes.size; }
  get handleCount(): number { return this.handles.size; }
  /** The kernel's lookup count of `nodeid` (tests). */
  lookupCount(nodeid: bigint): bigint | undefined { return this.inodes.get(nodeid)?.nlookup; }

  private resetTables(): void {
    for (const f of this.handles.values()) this.fs.close(f);
    this.handles.clear();
    for (const ino of this.inodes.values()) if (ino.nodeid !== 1n) this.fs.release(ino.node);
    this.inodes.clear();
    this.byNode.clear();
    const root: Inode = { nodeid: 1n, node: this.fs.root, nlookup: 1n };
    this.inodes.set(1n, root);
    this.byNode.set(this.fs.root, root);
    this.initialized = false;
  }

  /** Drops the session: every handle closed, every inode forgotten. */
  reset(): void { this.resetTables(); }

  dispose(): void {
    this.resetTables();
    this.fs.dispose();
  }

  /**
   * Serves one chain; returns the used length (0: no reply, e.g. FORGET or a
   * chain with no room for an out header). Never throws for guest data.
   */
  serve(memory: GuestMemory, chain: DescriptorChain): number {
    this.stats.requests++;
    if (chain.readableLength < F.IN_HEADER_SIZE) {
      this.stats.dropped++;
      return 0;
    }
    let hdr: Uint8Array;
    try {
      hdr = readChain(memory, chain.readable, 0, F.IN_HEADER_SIZE);
    } catch {
      this.stats.dropped++;
      return 0;
    }
    const hv = new DataView(hdr.buffer);
    const len = hv.getUint32(0, true);
    const opcode = hv.getUint32(4, true);
    const unique = hv.getBigUint64(8, true);
    const nodeid = hv.getBigUint64(16, true);
    const uid = hv.getUint32(24, true);
    const gid = hv.getUint32(28, true);
    const noReply = opcode === F.FUSE_FORGET || opcode === F.FUSE_BATCH_FORGET;
    const r = this.reply;
    r.reset();
    let errno = 0;
    let payloadLen = 0;
    try {
      if (len < F.IN_HEADER_SIZE || len > chain.readableLength) {
        this.stats.malformed++;
        err(F.EINVAL, 'in header length');
      }
      const isWrite = opcode === F.FUSE_WRITE;
      const argLen = isWrite ? Math.min(len - F.IN_HEADER_SIZE, F.WRITE_IN_SIZE) : len - F.IN_HEADER_SIZE;
      if (argLen > F.MAX_ARGS) err(F.EINVAL, 'request too large');
      const args = new ArgReader(readChain(memory, chain.readable, F.IN_HEADER_SIZE, argLen));
      if (!this.initialized && opcode !== F.FUSE_INIT && !noReply) err(F.EIO, 'not initialized');
      payloadLen = this.dispatch(opcode, nodeid, uid, gid, args, memory, chain, len);
    } catch (e) {
      errno = e instanceof FuseError ? e.errno : e instanceof FsError ? e.errno : F.EIO;
      if (!(e instanceof FuseError) && !(e instanceof FsError)) this.stats.malformed++;
      if (errno <= 0 || errno > 4095) errno = F.EIO;
      this.stats.errors++;
    }
    if (noReply) return 0;
    if (chain.writableLength < F.OUT_HEADER_SIZE) {
      this.stats.dropped++;
      return 0;
    }
    let total: number;
    if (errno !== 0) total = F.OUT_HEADER_SIZE;
    else if (payloadLen >= 0) total = r.len;
    else total = F.OUT_HEADER_SIZE - payloadLen - 1; // zero-copy READ: -(n+1) bytes already in the chain
    if (errno === 0 && total > chain.writableLength) {
      errno = F.ERANGE;
      total = F.OUT_HEADER_SIZE;
    }
    r.dv.setUint32(0, total, true);
    r.dv.setInt32(4, -errno, true);
    r.dv.setBigUint64(8, unique, true);
    try {
      writeChain(memory, chain.writable, 0, r.buf.subarray(0, payloadLen >= 0 || errno !== 0 ? total : F.OUT_HEADER_SIZE));
    } catch {
      this.stats.dropped++;
      return 0;
    }
    return total;
  }

  // ---- tables ----

  private inode(nodeid: bigint): Inode {
    const i = this.inodes.get(nodeid);
    if (!i) err(F.ESTALE, `nodeid ${nodeid}`);
    return i!;
  }

  private handle(fh: bigint): OpenFile {
    const f = this.handles.get(fh);
    if (!f || f.closed) err(F.EBADF, `fh ${fh}`);
    return f!;
  }

  /** Registers one kernel lookup of `node` (which carries one backend reference that we take over). */
  private remember(node: Node): Inode {
    const known = this.byNode.get(node);
    if (known) {
      known.nlookup++;
      this.fs.release(node); // the table already holds one backend reference for this inode
      return known;
    }
    const ino: Inode = { nodeid: this.nextNodeid++, node, nlookup: 1n };
    this.inodes.set(ino.nodeid, ino);
    this.byNode.set(node, ino);
    return ino;
  }

  private forget(nodeid: bigint, n: bigint): void {
    const ino = this.inodes.get(nodeid);
    if (!ino || nodeid === 1n) return;
    ino.nlookup = n >= ino.nlookup ? 0n : ino.nlookup - n;
    if (ino.nlookup === 0n) {
      this.inodes.delete(nodeid);
      this.byNode.delete(ino.node);
      this.fs.release(ino.node);
    }
  }

  private addHandle(file: OpenFile): bigint {
    if (this.handles.size >= this.maxHandles) {
      this.fs.close(file);
      err(F.EMFILE, 'too many open handles');
    }
    const fh = this.nextFh++;
    this.handles.set(fh, file);
    return fh;
  }

  private readOnly(): void {
    if (this.fs.readOnly) err(F.EROFS);
  }

  // ---- encoders ----

  private attr(st: Stat): void {
    const r = this.reply;
    r.u64(st.id).u64(st.size).u64(st.blocks)
      .u64(st.atime.sec).u64(st.mtime.sec).u64(st.ctime.sec)
      .u32(st.atime.nsec).u32(st.mtime.nsec).u32(st.ctime.nsec)
      .u32(st.mode).u32(st.nlink).u32(st.uid).u32(st.gid)
      .u32(((st.rdevMajor & 0xfff) << 8) | (st.rdevMinor & 0xff) | ((st.rdevMinor & ~0xff) << 12))
      .u32(st.blksize).u32(0);
  }

  private entry(ino: Inode | null, st: Stat | null): void {
    const r = this.reply;
    r.u64(ino ? ino.nodeid : 0n).u64(0n).u64(1n).u64(1n).u32(0).u32(0);
    if (st) this.attr(st);
    else r.zero(F.ATTR_SIZE);
  }

  /** Replies fuse_entry_out for a node just obtained (one backend reference). */
  private entryFor(node: Node): number {
    let st: Stat;
    try {
      st = this.fs.stat(node);
    } catch (e) {
      this.fs.release(node);
      throw e;
    }
    this.entry(this.remember(node), st);
    return this.reply.len;
  }

  // ---- dispatch ----

  private dispatch(op: number, nodeid: bigint, uid: number, gid: number, a: ArgReader, memory: GuestMemory, chain: DescriptorChain, len: number): number {
    const fs = this.fs;
    const r = this.reply;
    const owner = { uid, gid };
    switch (op) {
      case F.FUSE_INIT: return this.init(a);
      case F.FUSE_DESTROY:
        this.resetTables();
        return r.len;
      case F.FUSE_FORGET:
        this.forget(nodeid, a.u64());
        return 0;
      case F.FUSE_BATCH_FORGET: {
        const count = a.u32();
        a.u32();
        if (count > a.remaining / 16) err(F.EINVAL, 'batch forget count');
        for (let i = 0; i < count; i++) this.forget(a.u64(), a.u64());
        return 0;
      }
      case F.FUSE_LOOKUP: {
        const dir = this.inode(nodeid);
        const name = a.name();
        return this.entryFor(fs.lookup(dir.node, name));
      }
      case F.FUSE_GETATTR: {
        const ino = this.inode(nodeid);
        r.u64(1n).u32(0).u32(0);
        this.attr(fs.stat(ino.node));
        return r.len;
      }
      case F.FUSE_SETATTR: return this.setattr(nodeid, a);
      case F.FUSE_READLINK: {
        r.bytes(fs.readlink(this.inode(nodeid).node));
        return r.len;
      }
      case F.FUSE_SYMLINK: {
        const dir = this.inode(nodeid);
        const name = a.name();
        const target = a.cstr();
        this.readOnly();
        return this.entryFor(fs.symlink(dir.node, name, target, owner));
      }
      case F.FUSE_MKNOD: {
        const dir = this.inode(nodeid);
        const mode = a.u32();
        a.u32();
        const umask = a.u32();
        a.u32();
        const name = a.name();
        this.readOnly();
        return this.entryFor(fs.mknod(dir.node, name, (mode & 0o170000) | (mode & 0o7777 & ~umask), owner));
      }
      case F.FUSE_MKDIR: {
        const dir = this.inode(nodeid);
        const mode = a.u32();
        const umask = a.u32();
        const name = a.name();
        this.readOnly();
        return this.entryFor(fs.mkdir(dir.node, name, mode & 0o7777 & ~umask, owner));
      }
      case F.FUSE_UNLINK:
      case F.FUSE_RMDIR: {
        const dir = this.inode(nodeid);
        const name = a.name();
        this.readOnly();
        fs.unlink(dir.node, name, op === F.FUSE_RMDIR);
        return r.len;
      }
      case F.FUSE_RENAME:
      case F.FUSE_RENAME2: {
        const dir = this.inode(nodeid);
        const newdir = this.inode(a.u64());
        let flags = 0;
        if (op === F.FUSE_RENAME2) {
          flags = a.u32();
          a.u32();
        }
        const oldName = a.name();
        const newName = a.name();
        this.readOnly();
        fs.rename(dir.node, oldName, newdir.node, newName, flags);
        return r.len;
      }
      case F.FUSE_LINK: {
        const target = this.inode(a.u64());
        const dir = this.inode(nodeid);
        const name = a.name();
        this.readOnly();
        fs.link(target.node, dir.node, name);
        return this.entryFor(fs.lookup(dir.node, name));
      }
      case F.FUSE_OPEN:
      case F.FUSE_OPENDIR: {
        const ino = this.inode(nodeid);
        const flags = a.u32();
        const isDir = op === F.FUSE_OPENDIR;
        const mode = isDir ? { access: 'read' as const, directory: true } : openMode(flags);
        if (!isDir && ino.node.kind === 'dir') err(F.EISDIR);
        if (mode.access !== 'read' || mode.truncate) this.readOnly();
        const fh = this.addHandle(fs.open(ino.node, mode));
        r.u64(fh).u32(0).u32(0);
        return r.len;
      }
      case F.FUSE_CREATE: {
        const dir = this.inode(nodeid);
        const flags = a.u32();
        const mode = a.u32();
        const umask = a.u32();
        a.u32();
        const name = a.name();
        this.readOnly();
        if ((mode & 0o170000) !== 0 && (mode & 0o170000) !== 0o100000) err(F.EINVAL, 'create of a non-regular file');
        if (this.handles.size >= this.maxHandles) err(F.EMFILE);
        const { node, file } = fs.create(dir.node, name, openMode(flags), mode & 0o7777 & ~umask, owner, (flags & F.O_EXCL) !== 0);
        let st: Stat;
        try {
          st = fs.stat(node);
        } catch (e) {
          fs.close(file);
          fs.release(node);
          throw e;
        }
        const fh = this.addHandle(file);
        this.entry(this.remember(node), st);
        r.u64(fh).u32(0).u32(0);
        return r.len;
      }
      case F.FUSE_READ: {
        const fh = a.u64();
        const offset = a.u64();
        const size = a.u32();
        const file = this.handle(fh);
        if (size > F.MAX_WRITE) err(F.EINVAL, 'read size');
        const n = Math.min(size, Math.max(0, chain.writableLength - F.OUT_HEADER_SIZE));
        if (n === 0) return r.len;
        const got = fs.readv(file, offset, memory, sliceSegments(chain.writable, F.OUT_HEADER_SIZE, n));
        return -(got + 1);
      }
      case F.FUSE_WRITE: {
        const fh = a.u64();
        const offset = a.u64();
        const size = a.u32();
        const file = this.handle(fh);
        if (size > F.MAX_WRITE || F.IN_HEADER_SIZE + F.WRITE_IN_SIZE + size !== len) err(F.EINVAL, 'write size');
        this.readOnly();
        const n = size === 0 ? 0 : fs.writev(file, offset, memory, sliceSegments(chain.readable, F.IN_HEADER_SIZE + F.WRITE_IN_SIZE, size));
        r.u32(n).u32(0);
        return r.len;
      }
      case F.FUSE_STATFS: {
        const s = fs.statfs(this.inode(nodeid).node);
        r.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree)
          .u32(Number(s.bsize & 0xffffffffn)).u32(Number(s.namelen & 0xffffffffn)).u32(Number(s.bsize & 0xffffffffn)).u32(0).zero(24);
        return r.len;
      }
      case F.FUSE_RELEASE:
      case F.FUSE_RELEASEDIR: {
        const fh = a.u64();
        const file = this.handle(fh);
        this.handles.delete(fh);
        fs.close(file);
        return r.len;
      }
      case F.FUSE_FLUSH: {
        this.handle(a.u64());
        return r.len;
      }
      case F.FUSE_FSYNC:
      case F.FUSE_FSYNCDIR: {
        const file = this.handle(a.u64());
        const flags = a.u32();
        fs.fsync(file, (flags & 1) !== 0);
        return r.len;
      }
      case F.FUSE_SETXATTR: {
        const ino = this.inode(nodeid);
        const size = a.u32();
        const flags = a.u32();
        const name = a.cstr();
        if (size > 65536 || size > a.remaining) err(F.EINVAL, 'xattr size');
        const value = a.rest().subarray(0, size);
        this.readOnly();
        fs.setxattr(ino.node, name, value, flags);
        return r.len;
      }
      case F.FUSE_GETXATTR:
      case F.FUSE_LISTXATTR: {
        const ino = this.inode(nodeid);
        const size = a.u32();
        a.u32();
        const value = op === F.FUSE_GETXATTR ? fs.getxattr(ino.node, a.cstr()) : fs.listxattr(ino.node);
        if (size === 0) {
          r.u32(value.length).u32(0);
        } else {
          if (value.length > size) err(F.ERANGE);
          r.bytes(value);
        }
        return r.len;
      }
      case F.FUSE_REMOVEXATTR: {
        const ino = this.inode(nodeid);
        const name = a.cstr();
        this.readOnly();
        fs.removexattr(ino.node, name);
        return r.len;
      }
      case F.FUSE_ACCESS: {
        const ino = this.inode(nodeid);
        const mask = a.u32();
        if ((mask & 2) !== 0 && this.fs.readOnly) err(F.EROFS);
        const st = fs.stat(ino.node);
        if (uid !== 0 && mask !== 0) {
          const bits = uid === st.uid ? (st.mode >> 6) & 7 : gid === st.gid ? (st.mode >> 3) & 7 : st.mode & 7;
          if ((mask & 7 & ~bits) !== 0) err(F.EACCES);
        }
        return r.len;
      }
      case F.FUSE_FALLOCATE: {
        const file = this.handle(a.u64());
        const offset = a.u64();
        const length = a.u64();
        const mode = a.u32();
        this.readOnly();
        fs.fallocate(file, mode, offset, length);
        return r.len;
      }
      case F.FUSE_LSEEK: {
        const file = this.handle(a.u64());
        const offset = a.u64();
        const whence = a.u32();
        r.u64(fs.lseek(file, BigInt.asIntN(64, offset), whence));
        return r.len;
      }
      case F.FUSE_READDIR:
      case F.FUSE_READDIRPLUS: return this.readdir(op === F.FUSE_READDIRPLUS, a, chain);
      case F.FUSE_SYNCFS: return r.len;
      default: return err(F.ENOSYS, `opcode ${op}`);
    }
  }

  private init(a: ArgReader): number {
    const major = a.u32();
    const minor = a.u32();
    a.u32(); // max_readahead
    const flags = a.u32();
    const r = this.reply;
    if (major < F.FUSE_KERNEL_VERSION) err(F.EPROTO, `FUSE major ${major}`);
    if (major > F.FUSE_KERNEL_VERSION) {
      // The kernel retries with our major.
      r.u32(F.FUSE_KERNEL_VERSION).u32(F.FUSE_KERNEL_MINOR_VERSION).zero(F.INIT_OUT_SIZE - 8);
      return r.len;
    }
    if (this.initialized) this.resetTables();
    this.initialized = true;
    r.u32(F.FUSE_KERNEL_VERSION).u32(Math.min(minor, F.FUSE_KERNEL_MINOR_VERSION))
      .u32(128 * 1024).u32(flags & F.SUPPORTED_INIT_FLAGS)
      .u16(16).u16(12).u32(F.MAX_WRITE).u32(1).u16(F.MAX_PAGES).u16(0).u32(0).zero(28);
    return r.len;
  }

  private setattr(nodeid: bigint, a: ArgReader): number {
    const ino = this.inode(nodeid);
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
    a.u32();
    const mode = a.u32();
    a.u32();
    const uid = a.u32();
    const gid = a.u32();
    const set: { -readonly [K in keyof SetAttr]: SetAttr[K] } = {};
    if (valid & F.FATTR_MODE) set.mode = mode & 0o7777;
    if (valid & F.FATTR_UID) set.uid = uid;
    if (valid & F.FATTR_GID) set.gid = gid;
    if (valid & F.FATTR_SIZE) {
      if (size > (1n << 63n) - 1n) err(F.EINVAL, 'size');
      set.size = size;
    }
    const ts = (sec: bigint, nsec: number): Timespec => {
      if (nsec >= 1_000_000_000) err(F.EINVAL, 'nsec');
      return { sec: BigInt.asIntN(64, sec), nsec };
    };
    if (valid & F.FATTR_ATIME_NOW) set.atime = 'now';
    else if (valid & F.FATTR_ATIME) set.atime = ts(atime, atimensec);
    if (valid & F.FATTR_MTIME_NOW) set.mtime = 'now';
    else if (valid & F.FATTR_MTIME) set.mtime = ts(mtime, mtimensec);
    let file: OpenFile | undefined;
    if (valid & F.FATTR_FH) {
      const f = this.handles.get(fh);
      if (f && !f.closed && f.node === ino.node && f.writable) file = f;
    }
    if (Object.keys(set).length > 0) {
      this.readOnly();
      this.fs.setattr(ino.node, set, file);
    }
    const r = this.reply;
    r.u64(1n).u32(0).u32(0);
    this.attr(this.fs.stat(ino.node));
    return r.len;
  }

  private readdir(plus: boolean, a: ArgReader, chain: DescriptorChain): number {
    const fh = a.u64();
    const offset = a.u64();
    const size = a.u32();
    const file = this.handle(fh);
    if (file.node.kind !== 'dir') err(F.ENOTDIR);
    const r = this.reply;
    const limit = Math.min(size, chain.writableLength - F.OUT_HEADER_SIZE, r.buf.length - F.OUT_HEADER_SIZE);
    let used = 0;
    this.fs.readdir(file, offset, (e) => {
      const namelen = e.name.length;
      const rec = F.DIRENT_SIZE + ((namelen + 7) & ~7);
      const need = plus ? F.ENTRY_OUT_SIZE + rec : rec;
      if (used + need > limit) return false;
      const dot = e.name[0] === 0x2e && (namelen === 1 || (namelen === 2 && e.name[1] === 0x2e));
      if (plus) {
        let ino: Inode | null = null;
        let st: Stat | null = null;
        // Each remembered inode pins an O_PATH fd until the kernel FORGETs it; past 3/4 of the
        // share's fd budget the entry goes out without a nodeid and the kernel LOOKUPs it on use.
        if (!dot && this.fs.fdsInUse + 16 < (this.fs.maxFds * 3) / 4) {
          try {
            const node = this.fs.lookup(file.node, e.name);
            try {
              st = this.fs.stat(node);
            } catch (x) {
              this.fs.release(node);
              throw x;
            }
            ino = this.remember(node);
          } catch {
            ino = null;
            st = null;
          }
        }
        this.entry(ino, st);
      }
      r.u64(e.id).u64(e.offset).u32(namelen).u32(e.type).bytes(e.name).zero(rec - F.DIRENT_SIZE - namelen);
      used += need;
      return true;
    });
    return r.len;
  }
}

/** Maps open(2) flags to the backend's OpenMode (no raw flags pass through). */
function openMode(flags: number): OpenMode {
  const acc = flags & F.O_ACCMODE;
  const access = acc === F.O_WRONLY ? 'write' : acc === F.O_RDWR ? 'readwrite' : acc === 0 ? 'read' : err(F.EINVAL, 'access mode');
  const mode: { -readonly [K in keyof OpenMode]: OpenMode[K] } = { access };
  if (flags & F.O_TRUNC) mode.truncate = true;
  if (flags & F.O_APPEND) mode.append = true;
  if ((flags & F.O_SYNC) === F.O_SYNC) mode.sync = 'full';
  else if (flags & F.O_DSYNC) mode.sync = 'data';
  return mode;
}
