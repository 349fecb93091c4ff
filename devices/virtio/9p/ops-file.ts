/**
 * 9P2000.L messages on one file or directory: open/create, read/write (zero
 * copy), readdir, fsync, locks, getattr/setattr, statfs, readlink. Message
 * layouts are in each function's comment (9P2000.L, Linux net/9p/client.c).
 * Each op reads its whole body first, checks the reply fits, then acts.
 */
import type { OpenMode, SetAttr } from '../backends/hostdir/index.js';
import { readChain, sliceSegments, segmentsLength } from '../queue/chain-io.js';
import * as P from './constants.js';
import type { Op, P9Server, ReplyContext, ReplyInfo } from './server.js';
import type { MessageReader, ReplyWriter } from './wire.js';
import * as W from './wire.js';

const { RGETATTR_SIZE, RSTATFS_SIZE, ROPEN_SIZE, DIRENT_FIXED } = W;
/** iounit 0: "use msize - P9_IOHDRSZ". */
const IOUNIT = 0;
const PERM_MASK = 0o7777;
const DT_DIR = 4;
const DT_LNK = 10;

/** The OpenMode of Tlopen/Tlcreate flags. CREATE/EXCL are Tlcreate's business; NONBLOCK, DIRECT, NOATIME, ASYNC, CLOEXEC, NOCTTY are dropped. */
export function openModeOf(s: P9Server, flags: number): OpenMode {
  const acc = flags & P.P9_DOTL_ACCMODE;
  if (acc === P.P9_DOTL_NOACCESS) s.fail(P.EINVAL, 'open flags with access mode 3');
  return {
    access: acc === P.P9_DOTL_RDONLY ? 'read' : acc === P.P9_DOTL_WRONLY ? 'write' : 'readwrite',
    truncate: (flags & P.P9_DOTL_TRUNC) !== 0,
    append: (flags & P.P9_DOTL_APPEND) !== 0,
    ...((flags & P.P9_DOTL_SYNC) !== 0 ? { sync: 'full' as const } : (flags & P.P9_DOTL_DSYNC) !== 0 ? { sync: 'data' as const } : {}),
    directory: (flags & P.P9_DOTL_DIRECTORY) !== 0,
  };
}

/** Tlopen: fid[4] flags[4] -> Rlopen: qid[13] iounit[4]. */
function lopen(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, flags } = W.tlopen(r);
  const state = s.unopenedFid(fid);
  const mode = openModeOf(s, flags);
  s.needRoom(ctx, ROPEN_SIZE);
  state.file = s.fs.open(state.node, mode);
  w.qid(s.qid(state.node)).u32(IOUNIT);
  return P.P9_RLOPEN;
}

/** Tlcreate: fid[4] name[s] flags[4] mode[4] gid[4] -> Rlcreate: qid[13] iounit[4]. The directory fid becomes the new open file. */
function lcreate(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, name, flags, perm, gid } = W.tlcreate(r);
  const state = s.unopenedFid(fid);
  const mode = openModeOf(s, flags);
  s.needRoom(ctx, ROPEN_SIZE);
  const { node, file } = s.fs.create(state.node, name, mode, perm & PERM_MASK, s.owner(state.uid, gid), (flags & P.P9_DOTL_EXCL) !== 0);
  s.fs.release(state.node);
  state.node = node;
  state.file = file;
  w.qid(s.qid(node)).u32(IOUNIT);
  return P.P9_RLCREATE;
}

/**
 * Tread: fid[4] offset[8] count[4] -> Rread: count[4] data[count]. File data goes
 * straight from preadv into the chain's writable buffers after the 11-byte header.
 * count is cut to what the chain and msize hold.
 */
function read(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number | ReplyInfo {
  const { fid, offset, count } = W.tio(r);
  const room = Math.min(count, ctx.room - P.P9_IOHDR_REPLY);
  const state = s.fid(fid);
  if (state.kind === 'xattr-read') {
    const start = offset > BigInt(state.data.length) ? state.data.length : Number(offset);
    const chunk = state.data.subarray(start, start + room);
    w.u32(chunk.length).raw(chunk);
    return P.P9_RREAD;
  }
  const file = s.openFile(fid);
  const n = s.fs.readv(file, offset, ctx.memory, ctx.dataSegments(room));
  w.u32(n);
  return { type: P.P9_RREAD, inline: n };
}

/**
 * Twrite: fid[4] offset[8] count[4] data[count] -> Rwrite: count[4]. The data is
 * written from the chain's readable buffers (zero copy); count must not exceed
 * what the message carries.
 */
function write(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, offset, count } = W.tio(r);
  if (count > segmentsLength(ctx.writeData)) s.fail(P.EINVAL, `Twrite count ${count} exceeds the ${segmentsLength(ctx.writeData)} data bytes sent`);
  const data = sliceSegments(ctx.writeData, 0, count);
  const state = s.fid(fid);
  if (state.kind === 'xattr-write') {
    if (offset > BigInt(state.value.length - count)) s.fail(P.ENOSPC, `xattr write of ${count} bytes at ${offset} past its declared size ${state.value.length}`);
    // Linux's v9fs writes the value in order from 0; a write that starts past the covered prefix
    // would leave a hole (committed as zeros), so it is refused rather than counted.
    if (offset > BigInt(state.covered)) s.fail(P.EINVAL, `xattr write at ${offset} leaves a hole after the ${state.covered} bytes written`);
    state.value.set(readChain(ctx.memory, data, 0, count), Number(offset));
    state.covered = Math.max(state.covered, Number(offset) + count);
    w.u32(count);
    return P.P9_RWRITE;
  }
  const file = s.openFile(fid);
  w.u32(s.fs.writev(file, offset, ctx.memory, data));
  return P.P9_RWRITE;
}

/**
 * Treaddir: fid[4] offset[8] count[4] -> Rreaddir: count[4] then entries
 * qid[13] offset[8] type[1] name[s], as many as fit in count (and the chain).
 * offset is 0 or an entry's offset: the host's getdents64 d_off cookie.
 */
function readdir(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, offset, count } = W.tio(r);
  const file = s.openFile(fid);
  const limit = Math.min(count, ctx.room - P.P9_IOHDR_REPLY);
  const countAt = w.length;
  w.u32(0);
  let used = 0;
  let cutShort = false;
  s.fs.readdir(file, offset, (e) => {
    const size = DIRENT_FIXED + e.name.length;
    if (used + size > limit) {
      cutShort = true;
      return false;
    }
    const type = e.type === DT_DIR ? P.P9_QTDIR : e.type === DT_LNK ? P.P9_QTSYMLINK : P.P9_QTFILE;
    W.rdirent(w, { type, version: 0, path: e.id }, e.offset, e.type, e.name);
    used += size;
    return true;
  });
  // An empty reply means "end of directory": say EINVAL instead when count cannot hold the next entry.
  if (used === 0 && cutShort) s.fail(P.EINVAL, `Treaddir count ${count} holds no entry`);
  w.patchU32(countAt, used);
  return P.P9_RREADDIR;
}

/** Tfsync: fid[4] datasync[4] -> Rfsync. */
function fsync(s: P9Server, r: MessageReader): number {
  const { fid, datasync } = W.tfsync(r);
  s.fs.fsync(s.openFile(fid), datasync !== 0);
  return P.P9_RFSYNC;
}

/** The host lock type (F_RDLCK 0, F_WRLCK 1, F_UNLCK 2) of a 9P lock type. */
function lockType(s: P9Server, type: number): number {
  if (type !== P.P9_LOCK_TYPE_RDLCK && type !== P.P9_LOCK_TYPE_WRLCK && type !== P.P9_LOCK_TYPE_UNLCK) s.fail(P.EINVAL, `lock type ${type}`);
  return type;
}

/**
 * Tlock: fid[4] type[1] flags[4] start[8] length[8] proc_id[4] client_id[s] -> Rlock: status[1].
 * An open-file-description lock on the fid's open file, never waiting: a conflict answers
 * P9_LOCK_BLOCKED (Linux retries a blocking lock itself). ENOLCK past the session's
 * P9_MAX_LOCK_RANGES lock ranges.
 */
function lock(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  // flags: BLOCK is the client's to honour; we never wait. proc_id and client_id are not used.
  const { fid, type, start, length } = W.tlock(r);
  const file = s.openFile(fid);
  s.needRoom(ctx, P.P9_HEADER_SIZE + 1);
  const t = lockType(s, type);
  // The session's lock ranges are bounded (P9_MAX_LOCK_RANGES): each is a host kernel record.
  const ranges = s.fids.planLock(file, t, start, length);
  if (!ranges) s.fail(P.ENOLCK, `the session's open files hold ${s.fids.lockRanges} lock ranges, the most allowed`);
  const ok = s.fs.setlk(file, { type: t, start, length });
  if (ok) s.fids.commitLock(file, ranges);
  w.u8(ok ? P.P9_LOCK_SUCCESS : P.P9_LOCK_BLOCKED);
  return P.P9_RLOCK;
}

/**
 * Tgetlock: fid[4] type[1] start[8] length[8] proc_id[4] client_id[s] ->
 * Rgetlock: type[1] start[8] length[8] proc_id[4] client_id[s]: the conflicting lock
 * (proc_id is the host's, -1 for another fid's lock), or the request back with type UNLCK.
 */
function getlock(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, type, start, length, procId, clientId } = W.tgetlock(r);
  const file = s.openFile(fid);
  s.needRoom(ctx, P.P9_HEADER_SIZE + 1 + 8 + 8 + 4 + 2 + clientId.length);
  const got = s.fs.getlk(file, { type: lockType(s, type), start, length });
  if (got.type === P.P9_LOCK_TYPE_UNLCK) w.u8(P.P9_LOCK_TYPE_UNLCK).u64(start).u64(length).u32(procId);
  else w.u8(got.type).u64(got.start).u64(got.length).u32(got.pid);
  w.str(clientId);
  return P.P9_RGETLOCK;
}

/** Tgetattr: fid[4] request_mask[8] -> Rgetattr. Every basic field (and btime when known) is sent whatever the mask. */
function getattr(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid } = W.tgetattr(r); // request_mask: every basic field is sent anyway
  const state = s.nodeFid(fid);
  s.needRoom(ctx, RGETATTR_SIZE);
  const st = s.fs.stat(state.node);
  W.rgetattr(w, st, s.qid(state.node));
  return P.P9_RGETATTR;
}

/**
 * Tsetattr: fid[4] valid[4] mode[4] uid[4] gid[4] size[8] atime_sec[8] atime_nsec[8]
 * mtime_sec[8] mtime_nsec[8] -> Rsetattr. ATIME/MTIME without *_SET mean "now";
 * CTIME alone changes nothing the host would not change anyway.
 */
function setattr(s: P9Server, r: MessageReader): number {
  const { fid, valid, mode, uid, gid, size, atime, mtime } = W.tsetattr(r);
  const state = s.nodeFid(fid);
  const attrs: { -readonly [K in keyof SetAttr]: SetAttr[K] } = {};
  if (valid & P.P9_ATTR_MODE) attrs.mode = mode & PERM_MASK;
  if (valid & P.P9_ATTR_UID) attrs.uid = uid;
  if (valid & P.P9_ATTR_GID) attrs.gid = gid;
  if (valid & P.P9_ATTR_SIZE) attrs.size = size;
  if (valid & P.P9_ATTR_ATIME) attrs.atime = valid & P.P9_ATTR_ATIME_SET ? atime : 'now';
  if (valid & P.P9_ATTR_MTIME) attrs.mtime = valid & P.P9_ATTR_MTIME_SET ? mtime : 'now';
  s.fs.setattr(state.node, attrs, state.file ?? undefined);
  return P.P9_RSETATTR;
}

/** Tstatfs: fid[4] -> Rstatfs: type[4] bsize[4] blocks[8] bfree[8] bavail[8] files[8] ffree[8] fsid[8] namelen[4]. */
function statfs(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid } = W.tfid(r);
  const state = s.nodeFid(fid);
  s.needRoom(ctx, RSTATFS_SIZE);
  const st = s.fs.statfs(state.node);
  W.rstatfs(w, st);
  return P.P9_RSTATFS;
}

/** Treadlink: fid[4] -> Rreadlink: target[s]. */
function readlink(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid } = W.tfid(r);
  const target = s.fs.readlink(s.nodeFid(fid).node);
  s.needRoom(ctx, P.P9_HEADER_SIZE + 2 + target.length);
  w.str(target);
  return P.P9_RREADLINK;
}

export { encodeDev } from './wire.js';

export const FILE_OPS: ReadonlyArray<readonly [number, Op]> = [
  [P.P9_TLOPEN, lopen],
  [P.P9_TLCREATE, lcreate],
  [P.P9_TREAD, read],
  [P.P9_TWRITE, write],
  [P.P9_TREADDIR, readdir],
  [P.P9_TFSYNC, fsync],
  [P.P9_TLOCK, lock],
  [P.P9_TGETLOCK, getlock],
  [P.P9_TGETATTR, getattr],
  [P.P9_TSETATTR, setattr],
  [P.P9_TSTATFS, statfs],
  [P.P9_TREADLINK, readlink],
];
