/**
 * 9P2000.L messages that change a directory (mkdir, symlink, mknod, link,
 * rename, renameat, unlinkat) and the xattr fid state machine (Txattrwalk,
 * Txattrcreate; the value is then read with Tread, or written with Twrite and
 * set on Tclunk: see fids.ts and server.ts). Every name goes to the backend as
 * the bytes the guest sent; the backend validates it as one path component.
 */
import * as P from './constants.js';
import type { Op, P9Server, ReplyContext } from './server.js';
import type { MessageReader, ReplyWriter } from './wire.js';
import * as W from './wire.js';

/** Rmkdir / Rsymlink / Rmknod: qid[13]. */
const RQID_SIZE = P.P9_HEADER_SIZE + P.P9_QID_SIZE;
const PERM_MASK = 0o7777;
/** S_IFMT: the file type bits of a Tmknod mode. */
const S_IFMT = 0o170000;

/** Tmkdir: dfid[4] name[s] mode[4] gid[4] -> Rmkdir: qid. */
function mkdir(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { dfid, name, mode, gid } = W.tmkdir(r);
  const dir = s.nodeFid(dfid);
  s.needRoom(ctx, RQID_SIZE);
  const node = s.fs.mkdir(dir.node, name, mode & PERM_MASK, s.owner(dir.uid, gid));
  w.qid(s.qid(node));
  s.fs.release(node);
  return P.P9_RMKDIR;
}

/** Tsymlink: fid[4] name[s] symtgt[s] gid[4] -> Rsymlink: qid. The target is stored as given, never resolved. */
function symlink(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, name, target, gid } = W.tsymlink(r);
  const dir = s.nodeFid(fid);
  s.needRoom(ctx, RQID_SIZE);
  const node = s.fs.symlink(dir.node, name, target, s.owner(dir.uid, gid));
  w.qid(s.qid(node));
  s.fs.release(node);
  return P.P9_RSYMLINK;
}

/** Tmknod: dfid[4] name[s] mode[4] major[4] minor[4] gid[4] -> Rmknod: qid. FIFOs, sockets, regular files; devices get EPERM. */
function mknod(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  // major and minor are not used: device nodes are refused.
  const { dfid, name, mode, gid } = W.tmknod(r);
  const dir = s.nodeFid(dfid);
  s.needRoom(ctx, RQID_SIZE);
  const node = s.fs.mknod(dir.node, name, mode & (S_IFMT | PERM_MASK), s.owner(dir.uid, gid));
  w.qid(s.qid(node));
  s.fs.release(node);
  return P.P9_RMKNOD;
}

/** Tlink: dfid[4] fid[4] name[s] -> Rlink. A new name in dfid for fid's file. */
function link(s: P9Server, r: MessageReader): number {
  const { dfid, fid, name } = W.tlink(r);
  const dir = s.nodeFid(dfid);
  const target = s.nodeFid(fid);
  s.fs.link(target.node, dir.node, name);
  return P.P9_RLINK;
}

/** Trename: fid[4] dfid[4] name[s] -> Rrename. Moves the entry fid was walked by. */
function rename(s: P9Server, r: MessageReader): number {
  const { fid, dfid, name } = W.trename(r);
  const src = s.nodeFid(fid);
  const dir = s.nodeFid(dfid);
  s.fs.renameNode(src.node, dir.node, name);
  return P.P9_RRENAME;
}

/** Trenameat: olddirfid[4] oldname[s] newdirfid[4] newname[s] -> Rrenameat. */
function renameat(s: P9Server, r: MessageReader): number {
  const { oldDirFid, oldName, newDirFid, newName } = W.trenameat(r);
  const oldDir = s.nodeFid(oldDirFid);
  const newDir = s.nodeFid(newDirFid);
  s.fs.rename(oldDir.node, oldName, newDir.node, newName);
  return P.P9_RRENAMEAT;
}

/** Tunlinkat: dirfd[4] name[s] flags[4] -> Runlinkat. flags: 0, or AT_REMOVEDIR for a directory. */
function unlinkat(s: P9Server, r: MessageReader): number {
  const { dirFid, name, flags } = W.tunlinkat(r);
  if ((flags & ~P.P9_DOTL_AT_REMOVEDIR) !== 0) s.fail(P.EINVAL, `Tunlinkat flags 0x${flags.toString(16)}`);
  const dir = s.nodeFid(dirFid);
  s.fs.unlink(dir.node, name, (flags & P.P9_DOTL_AT_REMOVEDIR) !== 0);
  return P.P9_RUNLINKAT;
}

/**
 * Txattrwalk: fid[4] newfid[4] name[s] -> Rxattrwalk: size[8]. Fetches xattr `name`
 * of fid's file (or, for an empty name, the NUL-separated list of names) into
 * newfid, which the guest then reads with Tread and clunks. ENOMEM when the
 * session's xattr fids already hold P9_MAX_XATTR_BYTES.
 */
function xattrwalk(s: P9Server, r: MessageReader, w: ReplyWriter, ctx: ReplyContext): number {
  const { fid, newfid, name } = W.txattrwalk(r);
  const src = s.nodeFid(fid);
  s.newFid(newfid);
  s.needRoom(ctx, P.P9_HEADER_SIZE + 8);
  const data = name.length === 0 ? s.fs.listxattr(src.node) : s.fs.getxattr(src.node, name);
  s.xattrRoom(data.length);
  s.fids.set(newfid, { kind: 'xattr-read', data, uid: src.uid });
  w.u64(BigInt(data.length));
  return P.P9_RXATTRWALK;
}

/**
 * Txattrcreate: fid[4] name[s] attr_size[8] flags[4] -> Rxattrcreate. Turns fid into
 * an xattr-write fid of attr_size bytes (at most 64 KiB); the guest fills it with
 * Twrite and the value is set when the fid is clunked. Policy checks happen here,
 * and the session's xattr budget (ENOMEM past P9_MAX_XATTR_BYTES).
 */
function xattrcreate(s: P9Server, r: MessageReader): number {
  const { fid, name, size, flags } = W.txattrcreate(r);
  const state = s.unopenedFid(fid);
  if ((flags & ~(P.P9_XATTR_CREATE | P.P9_XATTR_REPLACE)) !== 0) s.fail(P.EINVAL, `Txattrcreate flags ${flags}`);
  if (size > BigInt(P.P9_XATTR_SIZE_MAX)) s.fail(P.E2BIG, `xattr of ${size} bytes`);
  s.fs.checkSetxattr(state.node, name);
  s.xattrRoom(Number(size));
  // The fid keeps its node reference, now held by the xattr-write state.
  s.fids.set(fid, { kind: 'xattr-write', node: state.node, name, flags, value: new Uint8Array(Number(size)), covered: 0, uid: state.uid });
  return P.P9_RXATTRCREATE;
}

export const DIR_OPS: ReadonlyArray<readonly [number, Op]> = [
  [P.P9_TMKDIR, mkdir],
  [P.P9_TSYMLINK, symlink],
  [P.P9_TMKNOD, mknod],
  [P.P9_TLINK, link],
  [P.P9_TRENAME, rename],
  [P.P9_TRENAMEAT, renameat],
  [P.P9_TUNLINKAT, unlinkat],
  [P.P9_TXATTRWALK, xattrwalk],
  [P.P9_TXATTRCREATE, xattrcreate],
];
