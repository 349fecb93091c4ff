/**
 * The FUSE operations, one small function per opcode, and the OPS table that
 * server.ts dispatches through. Each op gets the server (its tables, backend
 * and reply buffer) and the request (header, argument reader, the chain);
 * it decodes its argument struct with wire.ts, does the work through the
 * HostDir backend, writes its reply struct into `s.reply` and returns the
 * reply length (see FuseServer.serve for the other return values).
 *
 * Contract of every op: guest numbers are looked up or checked before use
 * (unknown nodeid: ESTALE, unknown fh: EBADF, bad name: EINVAL); anything
 * that would change a read-only share fails with EROFS before the backend is
 * asked; errors are thrown (FuseError / FsError) and become -errno replies.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { OpenFile, OpenMode, SetAttr, Stat, Timespec } from '../backends/hostdir/index.js';
import { sliceSegments } from '../queue/chain-io.js';
import type { DescriptorChain } from '../queue/types.js';
import * as F from './constants.js';
import type { FuseServer, Inode } from './server.js';
import * as W from './wire.js';
import { err } from './wire.js';

/** One request as an op sees it. */
export interface FuseRequest {
  readonly head: W.InHeader;
  /** The argument bytes after the in header (for WRITE: only fuse_write_in; the data stays in the chain). */
  readonly args: W.ArgReader;
  readonly memory: GuestMemory;
  readonly chain: DescriptorChain;
}

/** An opcode's handler: the reply length, -(n + 1) for n bytes read into the chain, or 0 for no reply. */
export type FuseOp = (s: FuseServer, q: FuseRequest) => number;

// ---- session ----

/**
 * FUSE_INIT: agrees on the protocol. An older major is EPROTO; a newer one
 * gets our version only (the kernel retries with it). A second INIT starts a
 * new session (every nodeid and handle dropped). Offers SUPPORTED_INIT_FLAGS
 * the kernel asked for, MAX_WRITE and MAX_PAGES.
 */
function init(s: FuseServer, q: FuseRequest): number {
  const { major, minor, flags } = W.initIn(q.args);
  const r = s.reply;
  if (major < F.FUSE_KERNEL_VERSION) err(F.EPROTO, `FUSE major ${major}`);
  if (major > F.FUSE_KERNEL_VERSION) {
    r.u32(F.FUSE_KERNEL_VERSION).u32(F.FUSE_KERNEL_MINOR_VERSION).zero(F.INIT_OUT_SIZE - 8);
    return r.len;
  }
  if (s.initialized) s.resetTables();
  s.initialized = true;
  // fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
  // max_write, time_gran, max_pages, map_alignment, flags2, unused[7].
  r.u32(F.FUSE_KERNEL_VERSION).u32(Math.min(minor, F.FUSE_KERNEL_MINOR_VERSION))
    .u32(128 * 1024).u32(flags & F.SUPPORTED_INIT_FLAGS)
    .u16(16).u16(12).u32(F.MAX_WRITE).u32(1).u16(F.MAX_PAGES).u16(0).u32(0).zero(28);
  return r.len;
}

/** FUSE_DESTROY: the kernel unmounts; every nodeid and handle is dropped. Empty reply. */
function destroy(s: FuseServer): number {
  s.resetTables();
  return s.reply.len;
}

/** FUSE_FORGET: gives back nlookup lookups of the header's nodeid. No reply. */
function forget(s: FuseServer, q: FuseRequest): number {
  s.forget(q.head.nodeid, W.forgetIn(q.args));
  return 0;
}

/** FUSE_BATCH_FORGET: FORGET for each (nodeid, nlookup) pair; the count must fit the message. No reply. */
function batchForget(s: FuseServer, q: FuseRequest): number {
  for (const f of W.batchForgetIn(q.args)) s.forget(f.nodeid, f.nlookup);
  return 0;
}

// ---- names and attributes ----

/** FUSE_LOOKUP: name in the directory nodeid -> fuse_entry_out (one kernel lookup taken). */
function lookup(s: FuseServer, q: FuseRequest): number {
  const dir = s.inode(q.head.nodeid);
  return s.entryFor(s.fs.lookup(dir.node, q.args.name()));
}

/** FUSE_GETATTR -> fuse_attr_out of nodeid. */
function getattr(s: FuseServer, q: FuseRequest): number {
  const ino = s.inode(q.head.nodeid);
  W.writeAttrOut(s.reply, s.fs.stat(ino.node));
  return s.reply.len;
}

/**
 * FUSE_SETATTR: changes what `valid` selects (mode, owner, size, times; with
 * FATTR_FH through that handle when it is a writable one of this node) ->
 * fuse_attr_out. Sizes past 2^63-1 and nanoseconds past 10^9 are EINVAL.
 */
function setattr(s: FuseServer, q: FuseRequest): number {
  const ino = s.inode(q.head.nodeid);
  const a = W.setattrIn(q.args);
  const { valid } = a;
  const set: { -readonly [K in keyof SetAttr]: SetAttr[K] } = {};
  if (valid & F.FATTR_MODE) set.mode = a.mode & 0o7777;
  if (valid & F.FATTR_UID) set.uid = a.uid;
  if (valid & F.FATTR_GID) set.gid = a.gid;
  if (valid & F.FATTR_SIZE) {
    if (a.size > (1n << 63n) - 1n) err(F.EINVAL, 'size');
    set.size = a.size;
  }
  const ts = (sec: bigint, nsec: number): Timespec => {
    if (nsec >= 1_000_000_000) err(F.EINVAL, 'nsec');
    return { sec: BigInt.asIntN(64, sec), nsec };
  };
  if (valid & F.FATTR_ATIME_NOW) set.atime = 'now';
  else if (valid & F.FATTR_ATIME) set.atime = ts(a.atime, a.atimensec);
  if (valid & F.FATTR_MTIME_NOW) set.mtime = 'now';
  else if (valid & F.FATTR_MTIME) set.mtime = ts(a.mtime, a.mtimensec);
  let file: OpenFile | undefined;
  if (valid & F.FATTR_FH) {
    const f = s.liveHandle(a.fh);
    if (f && f.node === ino.node && f.writable) file = f;
  }
  if (Object.keys(set).length > 0) {
    s.readOnly();
    s.fs.setattr(ino.node, set, file);
  }
  W.writeAttrOut(s.reply, s.fs.stat(ino.node));
  return s.reply.len;
}

/** FUSE_READLINK -> the link's target bytes. */
function readlink(s: FuseServer, q: FuseRequest): number {
  s.reply.bytes(s.fs.readlink(s.inode(q.head.nodeid).node));
  return s.reply.len;
}

/** FUSE_STATFS -> fuse_kstatfs of the share's file system. */
function statfs(s: FuseServer, q: FuseRequest): number {
  const st = s.fs.statfs(s.inode(q.head.nodeid).node);
  // blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6].
  s.reply.u64(st.blocks).u64(st.bfree).u64(st.bavail).u64(st.files).u64(st.ffree)
    .u32(Number(st.bsize & 0xffffffffn)).u32(Number(st.namelen & 0xffffffffn)).u32(Number(st.bsize & 0xffffffffn)).u32(0).zero(24);
  return s.reply.len;
}

/**
 * FUSE_ACCESS: mask (R=4, W=2, X=1) against the node's mode bits for the
 * caller's uid/gid (uid 0 passes); W on a read-only share is EROFS. Empty reply.
 */
function access(s: FuseServer, q: FuseRequest): number {
  const ino = s.inode(q.head.nodeid);
  const mask = W.accessIn(q.args);
  const { uid, gid } = q.head;
  if ((mask & 2) !== 0 && s.fs.readOnly) err(F.EROFS);
  const st = s.fs.stat(ino.node);
  if (uid !== 0 && mask !== 0) {
    const bits = uid === st.uid ? (st.mode >> 6) & 7 : gid === st.gid ? (st.mode >> 3) & 7 : st.mode & 7;
    if ((mask & 7 & ~bits) !== 0) err(F.EACCES);
  }
  return s.reply.len;
}

// ---- creating and removing names (each EROFS on a read-only share) ----

/** FUSE_SYMLINK: name -> target in nodeid, owned by the caller -> fuse_entry_out. */
function symlink(s: FuseServer, q: FuseRequest): number {
  const dir = s.inode(q.head.nodeid);
  const { name, target } = W.symlinkIn(q.args);
  s.readOnly();
  return s.entryFor(s.fs.symlink(dir.node, name, target, owner(q)));
}

/** FUSE_MKNOD: a node of the type in mode, permissions less umask -> fuse_entry_out. */
function mknod(s: FuseServer, q: FuseRequest): number {
  const dir = s.inode(q.head.nodeid);
  const { mode, umask, name } = W.mknodIn(q.args);
  s.readOnly();
  return s.entryFor(s.fs.mknod(dir.node, name, (mode & 0o170000) | (mode & 0o7777 & ~umask), owner(q)));
}

/** FUSE_MKDIR: a directory, permissions less umask -> fuse_entry_out. */
function mkdir(s: FuseServer, q: FuseRequest): number {
  const dir = s.inode(q.head.nodeid);
  const { mode, umask, name } = W.mkdirIn(q.args);
  s.readOnly();
  return s.entryFor(s.fs.mkdir(dir.node, name, mode & 0o7777 & ~umask, owner(q)));
}

/** FUSE_UNLINK / FUSE_RMDIR: removes name from nodeid (RMDIR: a directory only). Empty reply. */
function unlinkOp(rmdir: boolean): FuseOp {
  return (s, q) => {
    const dir = s.inode(q.head.nodeid);
    const name = q.args.name();
    s.readOnly();
    s.fs.unlink(dir.node, name, rmdir);
    return s.reply.len;
  };
}

/** FUSE_RENAME / FUSE_RENAME2 (with renameat2 flags): old name in nodeid -> new name in newdir. Empty reply. */
function renameOp(v2: boolean): FuseOp {
  return (s, q) => {
    const dir = s.inode(q.head.nodeid);
    const a = W.renameIn(q.args, v2);
    const newdir = s.inode(a.newdir);
    const oldName = q.args.name();
    const newName = q.args.name();
    s.readOnly();
    s.fs.rename(dir.node, oldName, newdir.node, newName, a.flags);
    return s.reply.len;
  };
}

/** FUSE_LINK: a hard link to oldnodeid named name in nodeid -> fuse_entry_out of the link. */
function link(s: FuseServer, q: FuseRequest): number {
  const target = s.inode(W.fhIn(q.args)); // fuse_link_in { oldnodeid }
  const dir = s.inode(q.head.nodeid);
  const name = q.args.name();
  s.readOnly();
  s.fs.link(target.node, dir.node, name);
  return s.entryFor(s.fs.lookup(dir.node, name));
}

// ---- open files ----

/** FUSE_OPEN / FUSE_OPENDIR -> fuse_open_out with a new fh. Opening a directory as a file is EISDIR; writing or truncating a read-only share EROFS. */
function openOp(isDir: boolean): FuseOp {
  return (s, q) => {
    const ino = s.inode(q.head.nodeid);
    const flags = W.openIn(q.args);
    const mode = isDir ? { access: 'read' as const, directory: true } : openMode(flags);
    if (!isDir && ino.node.kind === 'dir') err(F.EISDIR);
    if (mode.access !== 'read' || mode.truncate) s.readOnly();
    W.writeOpenOut(s.reply, s.addHandle(s.fs.open(ino.node, mode)), !isDir && s.directIo ? F.FOPEN_DIRECT_IO : 0);
    return s.reply.len;
  };
}

/**
 * FUSE_CREATE: creates and opens a regular file (O_EXCL honoured) ->
 * fuse_entry_out then fuse_open_out. EMFILE is checked before anything is
 * created; on a later failure the new file is closed and released.
 */
function create(s: FuseServer, q: FuseRequest): number {
  const dir = s.inode(q.head.nodeid);
  const { flags, mode, umask, name } = W.createIn(q.args);
  s.readOnly();
  if ((mode & 0o170000) !== 0 && (mode & 0o170000) !== 0o100000) err(F.EINVAL, 'create of a non-regular file');
  if (s.openHandles >= s.maxHandles) err(F.EMFILE);
  const { node, file } = s.fs.create(dir.node, name, openMode(flags), mode & 0o7777 & ~umask, owner(q), (flags & F.O_EXCL) !== 0);
  let st: Stat;
  try {
    st = s.fs.stat(node);
  } catch (e) {
    s.fs.close(file);
    s.fs.release(node);
    throw e;
  }
  const fh = s.addHandle(file);
  W.writeEntry(s.reply, s.remember(node).nodeid, st);
  W.writeOpenOut(s.reply, fh, s.directIo ? F.FOPEN_DIRECT_IO : 0);
  return s.reply.len;
}

/** FUSE_READ: up to size (<= MAX_WRITE) bytes at offset, read straight into the chain after the out header. */
function read(s: FuseServer, q: FuseRequest): number {
  const { fh, offset, size } = W.ioIn(q.args);
  const file = s.handle(fh);
  if (size > F.MAX_WRITE) err(F.EINVAL, 'read size');
  const n = Math.min(size, Math.max(0, q.chain.writableLength - F.OUT_HEADER_SIZE));
  if (n === 0) return s.reply.len;
  const got = s.fs.readv(file, offset, q.memory, sliceSegments(q.chain.writable, F.OUT_HEADER_SIZE, n));
  return -(got + 1);
}

/** FUSE_WRITE: size bytes (exactly what follows fuse_write_in, <= MAX_WRITE) from the chain at offset -> fuse_write_out. */
function write(s: FuseServer, q: FuseRequest): number {
  const { fh, offset, size } = W.ioIn(q.args);
  const file = s.handle(fh);
  if (size > F.MAX_WRITE || F.IN_HEADER_SIZE + F.WRITE_IN_SIZE + size !== q.head.len) err(F.EINVAL, 'write size');
  s.readOnly();
  const n = size === 0 ? 0 : s.fs.writev(file, offset, q.memory, sliceSegments(q.chain.readable, F.IN_HEADER_SIZE + F.WRITE_IN_SIZE, size));
  s.reply.u32(n).u32(0);
  return s.reply.len;
}

/** FUSE_RELEASE / FUSE_RELEASEDIR: closes and forgets fh. Empty reply. */
function release(s: FuseServer, q: FuseRequest): number {
  s.closeHandle(W.fhIn(q.args));
  return s.reply.len;
}

/** FUSE_FLUSH: nothing to do (writes are not buffered) but fh must be valid. Empty reply. */
function flush(s: FuseServer, q: FuseRequest): number {
  s.handle(W.fhIn(q.args));
  return s.reply.len;
}

/** FUSE_FSYNC / FUSE_FSYNCDIR: fsync, or fdatasync with bit 0 of fsync_flags. Empty reply. */
function fsync(s: FuseServer, q: FuseRequest): number {
  const { fh, datasync } = W.fsyncIn(q.args);
  s.fs.fsync(s.handle(fh), datasync);
  return s.reply.len;
}

/** FUSE_FALLOCATE: fallocate(2) mode over [offset, offset+length) of fh. Empty reply. */
function fallocate(s: FuseServer, q: FuseRequest): number {
  const a = W.fallocateIn(q.args);
  const file = s.handle(a.fh);
  s.readOnly();
  s.fs.fallocate(file, a.mode, a.offset, a.length);
  return s.reply.len;
}

/** FUSE_LSEEK: SEEK_DATA / SEEK_HOLE (and the plain whences) on fh -> fuse_lseek_out { offset }. */
function lseek(s: FuseServer, q: FuseRequest): number {
  const a = W.lseekIn(q.args);
  const file = s.handle(a.fh);
  s.reply.u64(s.fs.lseek(file, BigInt.asIntN(64, a.offset), a.whence));
  return s.reply.len;
}

/** FUSE_SYNCFS: every write already went to the host file. Empty reply. */
function syncfs(s: FuseServer): number {
  return s.reply.len;
}

// ---- extended attributes ----

/** FUSE_SETXATTR: name = value (at most 64 KiB) with setxattr flags. Empty reply. */
function setxattr(s: FuseServer, q: FuseRequest): number {
  const ino = s.inode(q.head.nodeid);
  const { name, value, flags } = W.setxattrIn(q.args);
  s.readOnly();
  s.fs.setxattr(ino.node, name, value, flags);
  return s.reply.len;
}

/** FUSE_GETXATTR / FUSE_LISTXATTR: size 0 -> fuse_getxattr_out { size }; otherwise the bytes, ERANGE when larger than size. */
function getxattrOp(list: boolean): FuseOp {
  return (s, q) => {
    const ino = s.inode(q.head.nodeid);
    const { size, name } = W.getxattrIn(q.args, !list);
    const value = name ? s.fs.getxattr(ino.node, name) : s.fs.listxattr(ino.node);
    if (size === 0) {
      s.reply.u32(value.length).u32(0);
    } else {
      if (value.length > size) err(F.ERANGE);
      s.reply.bytes(value);
    }
    return s.reply.len;
  };
}

/** FUSE_REMOVEXATTR: removes name. Empty reply. */
function removexattr(s: FuseServer, q: FuseRequest): number {
  const ino = s.inode(q.head.nodeid);
  const name = q.args.cstr();
  s.readOnly();
  s.fs.removexattr(ino.node, name);
  return s.reply.len;
}

// ---- directories ----

/**
 * FUSE_READDIR / FUSE_READDIRPLUS: entries of the directory fh from offset
 * (a host d_off cookie), as many whole fuse_dirent (PLUS: fuse_direntplus)
 * as fit in size, the chain and the reply buffer. PLUS takes a lookup of each
 * entry except . and ..; past 3/4 of the share's fd budget, or when the entry
 * cannot be looked up, it goes out with nodeid 0 (the kernel LOOKUPs it on use).
 */
function readdirOp(plus: boolean): FuseOp {
  return (s, q) => {
    const { fh, offset, size } = W.ioIn(q.args);
    const file = s.handle(fh);
    if (file.node.kind !== 'dir') err(F.ENOTDIR);
    const r = s.reply;
    const limit = Math.min(size, q.chain.writableLength - F.OUT_HEADER_SIZE, r.buf.length - F.OUT_HEADER_SIZE);
    let used = 0;
    s.fs.readdir(file, offset, (e) => {
      const rec = W.direntSize(e.name.length);
      const need = plus ? F.ENTRY_OUT_SIZE + rec : rec;
      if (used + need > limit) return false;
      if (plus) {
        const ino = plusLookup(s, file, e.name);
        W.writeEntry(r, ino ? ino.inode.nodeid : 0n, ino ? ino.st : null);
      }
      W.writeDirent(r, e.id, e.offset, e.type, e.name);
      used += need;
      return true;
    });
    return r.len;
  };
}

/** READDIRPLUS's lookup of one entry, or null (a dot name, the fd budget nearly spent, or any failure). */
function plusLookup(s: FuseServer, dir: OpenFile, name: Uint8Array): { inode: Inode; st: Stat } | null {
  const dot = name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e));
  // Each remembered inode pins an O_PATH fd until the kernel FORGETs it.
  if (dot || s.fs.fdsInUse + 16 >= (s.fs.maxFds * 3) / 4) return null;
  try {
    const node = s.fs.lookup(dir.node, name);
    const st = s.statNew(node);
    return { inode: s.remember(node), st };
  } catch {
    return null;
  }
}

// ---- helpers ----

/** The caller's ids, for what a create-like op makes. */
function owner(q: FuseRequest): { uid: number; gid: number } {
  return { uid: q.head.uid, gid: q.head.gid };
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

/** Every opcode the server answers; any other is ENOSYS. */
export const OPS: ReadonlyMap<number, FuseOp> = new Map<number, FuseOp>([
  [F.FUSE_INIT, init],
  [F.FUSE_DESTROY, destroy],
  [F.FUSE_FORGET, forget],
  [F.FUSE_BATCH_FORGET, batchForget],
  [F.FUSE_LOOKUP, lookup],
  [F.FUSE_GETATTR, getattr],
  [F.FUSE_SETATTR, setattr],
  [F.FUSE_READLINK, readlink],
  [F.FUSE_SYMLINK, symlink],
  [F.FUSE_MKNOD, mknod],
  [F.FUSE_MKDIR, mkdir],
  [F.FUSE_UNLINK, unlinkOp(false)],
  [F.FUSE_RMDIR, unlinkOp(true)],
  [F.FUSE_RENAME, renameOp(false)],
  [F.FUSE_RENAME2, renameOp(true)],
  [F.FUSE_LINK, link],
  [F.FUSE_OPEN, openOp(false)],
  [F.FUSE_OPENDIR, openOp(true)],
  [F.FUSE_CREATE, create],
  [F.FUSE_READ, read],
  [F.FUSE_WRITE, write],
  [F.FUSE_STATFS, statfs],
  [F.FUSE_RELEASE, release],
  [F.FUSE_RELEASEDIR, release],
  [F.FUSE_FLUSH, flush],
  [F.FUSE_FSYNC, fsync],
  [F.FUSE_FSYNCDIR, fsync],
  [F.FUSE_SETXATTR, setxattr],
  [F.FUSE_GETXATTR, getxattrOp(false)],
  [F.FUSE_LISTXATTR, getxattrOp(true)],
  [F.FUSE_REMOVEXATTR, removexattr],
  [F.FUSE_ACCESS, access],
  [F.FUSE_FALLOCATE, fallocate],
  [F.FUSE_LSEEK, lseek],
  [F.FUSE_READDIR, readdirOp(false)],
  [F.FUSE_READDIRPLUS, readdirOp(true)],
  [F.FUSE_SYNCFS, syncfs],
]);
