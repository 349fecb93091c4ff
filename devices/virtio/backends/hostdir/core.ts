/**
 * The plumbing under HostDir (hostdir.ts): the node table and the fds behind
 * it, adopting freshly opened inodes, re-opening a node for I/O, the fd
 * budget, inode identity, ownership and mode fix-ups, and the policy checks
 * shared by every operation. See README.md for the rules these implement.
 * I/O worker only.
 */
import { fail } from './errors.js';
import { componentBytes, cstr, DOT_PATH, EMPTY_PATH, decimalPath, type NameInput } from './names.js';
import { Node, NodeTable, nodeKey, type NodeKind } from './nodes.js';
import * as S from './sys.js';
import { FileIo, OpenFile } from './file-io.js';
import type { OpenMode, Owner, Stat, Timespec } from './types.js';
const encoder = new TextEncoder();

/** Options of a {@link HostDir}. */
export interface HostDirOptions {
  /** Refuse every mutating operation with EROFS. */
  readonly readOnly: boolean;
  /**
   * Most fds the share may hold at once (nodes plus open files); past it,
   * calls that need one more fail with EMFILE. Default: a quarter of
   * RLIMIT_NOFILE, clamped to 256..65536, so a guest cannot starve the VMM
   * process of fds.
   */
  readonly maxFds?: number;
}

/** The resolve flags of every guest-name open: stay under the dirfd, never follow any symlink. */
export const RESOLVE_SANDBOX = S.RESOLVE_BENEATH | S.RESOLVE_NO_MAGICLINKS | S.RESOLVE_NO_SYMLINKS;
export const STAT_FLAGS = S.AT_EMPTY_PATH | S.AT_SYMLINK_NOFOLLOW;
const STAT_MASK = S.STATX_BASIC_STATS | S.STATX_BTIME;
const PERM_MASK = 0o7777;
const MASK64 = (1n << 64n) - 1n;
/** fchownat's "leave unchanged" id. */
export const ID_UNCHANGED = 0xffff_ffff;
const NSEC_PER_SEC = 1_000_000_000;
export const INT64_MAX = (1n << 63n) - 1n;

/** What an inode's S_IFMT says it is. */
export function kindOf(mode: number): NodeKind {
  switch (mode & S.S_IFMT) {
    case S.S_IFDIR: return 'dir';
    case S.S_IFREG: return 'file';
    case S.S_IFLNK: return 'symlink';
    case S.S_IFIFO: return 'fifo';
    case S.S_IFSOCK: return 'socket';
    case S.S_IFCHR: return 'chr';
    default: return 'blk';
  }
}

/**
 * Permission bits the backend will set on the host: set-user-ID is always
 * dropped, and set-group-ID on everything but directories (where it only
 * means "inherit the group"). A guest must not be able to plant a
 * set-ID program that a host user could run (see README.md "Policies").
 */
export function sanitizePerm(perm: number, isDir: boolean): number {
  return perm & PERM_MASK & ~S.S_ISUID & ~(isDir ? 0 : S.S_ISGID);
}

/** HostDir's state and internals; HostDir adds the public operations. */
export class HostDirCore {
  readonly root: Node;
  readonly readOnly: boolean;
  readonly maxFds: number;
  protected readonly nodes: NodeTable;
  protected readonly io: FileIo;
  /** O_PATH fd of /proc/self/fd, for re-opening our own fds (README.md, "The sandbox", rule 4). */
  protected readonly procFd: number;
  /** Host devices seen under the share, in order: index 0 is the root's. */
  protected readonly devices = new Map<string, number>();
  protected readonly files = new Set<OpenFile>();
  protected readonly isRoot = S.geteuid() === 0;
  protected disposed = false;

  /**
   * Wraps the share's root directory (I/O worker). `rootFd` is an O_PATH (or
   * O_RDONLY) directory fd from openHostDir(); it stays owned by its opener and
   * must outlive this object. Opens /proc/self/fd. Throws FsError when the
   * root cannot be stat'ed or /proc is not mounted.
   */
  constructor(rootFd: number, opts: HostDirOptions) {
    this.readOnly = opts.readOnly;
    this.maxFds = opts.maxFds ?? defaultMaxFds();
    const st = rawStat(rootFd, 'stat(root)');
    if (kindOf(st.mode) !== 'dir') fail(S.ENOTDIR, 'open share', 'the root is not a directory');
    const dev = devOf(st);
    this.devices.set(dev, 0);
    this.root = new Node(rootFd, dev, st.ino, st.ino, 'dir', null, null);
    this.nodes = new NodeTable(this.root);
    this.procFd = S.openat(S.AT_FDCWD, cstr(new TextEncoder().encode('/proc/self/fd')), S.O_PATH | S.O_DIRECTORY | S.O_CLOEXEC, 0);
    if (this.procFd < 0) fail(S.errno(), 'open /proc/self/fd', 'procfs must be mounted');
    this.io = new FileIo();
  }

  /** Fds the share holds now (nodes other than the root, and open files). */
  get fdsInUse(): number {
    return this.nodes.size - 1 + this.files.size;
  }

  /** Live nodes, the root included (tests, diagnostics). */
  get nodeCount(): number {
    return this.nodes.size;
  }

  /** Open files (tests, diagnostics). */
  get openFileCount(): number {
    return this.files.size;
  }

  // ---- internals (protected: for HostDir) ----

  /** Takes a fresh O_PATH fd on a child of `parent`: the table's node for its inode (gets the reference; the fd is closed), or a new node. */
  protected adopt(fd: number, parent: Node, name: Uint8Array): Node {
    let st: S.RawStat;
    try {
      st = rawStat(fd, 'stat');
    } catch (e) {
      S.close(fd);
      throw e;
    }
    const dev = devOf(st);
    const existing = this.nodes.get(nodeKey(dev, st.ino));
    if (existing) {
      S.close(fd);
      existing.refs++;
      this.nodes.setParent(existing, parent, name);
      return existing;
    }
    if (this.fdsInUse >= this.maxFds) {
      S.close(fd);
      fail(S.EMFILE, 'lookup', `the share holds ${this.fdsInUse} fds (limit ${this.maxFds})`);
    }
    const node = new Node(fd, dev, st.ino, this.inodeId(dev, st.ino), kindOf(st.mode), parent, name);
    parent.refs++;
    this.nodes.add(node);
    return node;
  }

  /**
   * Sets the owner the protocol asked for (best effort: EPERM is ignored when we
   * are not root) and the exact permission bits (our umask may have cleared some).
   * `fd`: an open fd of the inode, if the caller has one (for fchmod).
   */
  protected applyOwnerAndMode(node: Node, fd: number | null, perm: number | null, owner: Owner | undefined): void {
    let st = rawStat(node.fd, 'stat');
    if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) {
      if (S.fchownat(node.fd, EMPTY_PATH, owner.uid >>> 0, owner.gid >>> 0, STAT_FLAGS) < 0) {
        const e = S.errno();
        if (e !== S.EPERM || this.isRoot) fail(e, 'chown');
      }
      st = rawStat(node.fd, 'stat');
    }
    if (perm === null) return;
    // A new directory inherits S_ISGID from a set-group-ID parent: keep that.
    const target = perm | (node.kind === 'dir' ? st.mode & S.S_ISGID : 0);
    if ((st.mode & PERM_MASK) === target) return;
    if (fd !== null) check(S.fchmod(fd, target), 'chmod');
    else this.chmod(node, target);
  }

  /** chmod of a node that is not a symlink, through our fd's /proc/self/fd link (an O_PATH fd cannot fchmod). */
  protected chmod(node: Node, perm: number): void {
    if (node.kind === 'symlink') fail(S.EOPNOTSUPP, 'chmod', 'symlink permissions cannot be changed');
    check(S.fchmodat(this.procFd, decimalPath(node.fd), perm, 0), 'chmod');
  }

  protected truncate(node: Node, size: bigint, file: OpenFile | undefined): void {
    if (node.kind === 'dir') fail(S.EISDIR, 'truncate');
    if (node.kind !== 'file') fail(S.EINVAL, 'truncate', `a ${node.kind}`);
    if (size < 0n || size > INT64_MAX) fail(S.EINVAL, 'truncate', `size ${size}`);
    if (file && !file.closed && file.node === node && file.mode.access !== 'read') {
      check(S.ftruncate(file.fd, size), 'truncate');
      return;
    }
    const fd = this.reopen(node, S.O_WRONLY | S.O_CLOEXEC | S.O_NOCTTY, 'truncate');
    try {
      check(S.ftruncate(fd, size), 'truncate');
    } finally {
      S.close(fd);
    }
  }

  /**
   * `/proc/self/fd/<node's fd>` as a C string, for the path-based xattr reads:
   * the kernel resolves the link to the node's own inode (never through a name
   * in the share), as the /proc/self/fd reopen in {@link reopen} does. Only for
   * regular files and directories: a path-based call on a symlink's fd would
   * follow it.
   */
  protected fdLinkPath(node: Node): Uint8Array {
    if (node.kind !== 'file' && node.kind !== 'dir') throw new Error(`hostdir: fd link of a ${node.kind}`);
    return (node.fdLink ??= cstr(encoder.encode(`/proc/self/fd/${node.fd}`)));
  }

  /**
   * Runs `fn` on a readable fd of a regular file or directory (for the f*xattr calls,
   * which refuse O_PATH fds); `other` answers for symlinks and special files, whose
   * xattrs the backend never touches (a path-based call could follow a symlink).
   */
  protected withXattrFd<T>(node: Node, op: string, other: () => T, fn: (fd: number) => T): T {
    if (node.kind !== 'file' && node.kind !== 'dir') return other();
    const fd = node.kind === 'dir'
      ? openBeneath(node.fd, DOT_PATH, S.O_RDONLY | S.O_DIRECTORY | S.O_CLOEXEC, 0, op)
      : this.reopen(node, S.O_RDONLY | S.O_CLOEXEC | S.O_NOCTTY, op);
    try {
      return fn(fd);
    } finally {
      S.close(fd);
    }
  }

  /**
   * Opens regular file `node` again with `flags`, through the /proc/self/fd link of
   * its own fd (see the file comment), and checks the result is the same inode.
   */
  protected reopen(node: Node, flags: number, op: string): number {
    if (node.kind !== 'file') throw new Error(`hostdir: reopen of a ${node.kind}`);
    const fd = retryEintr(() => S.openat(this.procFd, decimalPath(node.fd), flags | S.O_CLOEXEC | S.O_NOCTTY, 0), op);
    let st: S.RawStat;
    try {
      st = rawStat(fd, op);
    } catch (e) {
      S.close(fd);
      throw e;
    }
    if (nodeKey(devOf(st), st.ino) !== node.key || kindOf(st.mode) !== 'file') {
      S.close(fd);
      fail(S.ESTALE, op, 'the re-opened fd is another inode');
    }
    return fd;
  }

  /** An O_PATH fd on the inode open `fd` refers to (through its /proc/self/fd link). */
  protected reopenPath(fd: number, op: string): number {
    return retryEintr(() => S.openat(this.procFd, decimalPath(fd), S.O_PATH | S.O_CLOEXEC, 0), op);
  }

  protected track(fd: number, node: Node, mode: OpenMode): OpenFile {
    const file = new OpenFile(fd, node, mode);
    node.refs++;
    this.files.add(file);
    return file;
  }

  /** The host open flags for `mode` on a `kind`, after the policy checks. */
  protected openFlags(kind: NodeKind, mode: OpenMode, op: string): number {
    const writes = mode.access !== 'read' || mode.truncate === true;
    if (writes) this.writable(op);
    switch (kind) {
      case 'dir':
        if (writes || mode.append) fail(S.EISDIR, op);
        return S.O_RDONLY | S.O_DIRECTORY;
      case 'file':
        break;
      case 'symlink':
        fail(S.ELOOP, op, 'symlinks are not opened');
      case 'chr':
      case 'blk':
        fail(S.EPERM, op, 'host device nodes are not opened');
      default:
        fail(S.ENXIO, op, `a ${kind} is not opened`);
    }
    if (mode.directory) fail(S.ENOTDIR, op);
    let flags = mode.access === 'read' ? S.O_RDONLY : mode.access === 'write' ? S.O_WRONLY : S.O_RDWR;
    if (mode.truncate) flags |= S.O_TRUNC;
    if (mode.append) flags |= S.O_APPEND;
    if (mode.sync === 'data') flags |= S.O_DSYNC;
    if (mode.sync === 'full') flags |= S.O_SYNC;
    return flags | S.O_CLOEXEC | S.O_NOCTTY;
  }

  /** A validated child name of directory `dir` as a C string. */
  protected childPath(dir: Node, name: NameInput, op: string): Uint8Array {
    const bytes = componentBytes(name, op);
    if (dir.kind !== 'dir') fail(S.ENOTDIR, op);
    return cstr(bytes);
  }

  /**
   * The (parent, name) `node` was reached by, checked to still name this inode, for
   * the calls that act on an entry rather than an inode. The check and the call are
   * two syscalls: only a host process could slip in between, and the call still
   * stays inside the parent directory.
   */
  protected ownEntry(node: Node, op: string): { parent: Node; name: Uint8Array } {
    if (node === this.root) fail(S.EBUSY, op, 'the share root');
    const { parent, name } = node;
    if (!parent || !name) fail(S.ESTALE, op);
    const buf = new Uint8Array(S.STATX_SIZE_BYTES);
    if (S.statx(parent.fd, cstr(name), S.AT_SYMLINK_NOFOLLOW, S.STATX_INO, buf) < 0) fail(S.errno() === S.ENOENT ? S.ESTALE : S.errno(), op);
    const st = S.decodeStatx(buf);
    if (nodeKey(devOf(st), st.ino) !== node.key) fail(S.ESTALE, op, 'the name now refers to another inode');
    return { parent, name };
  }

  /** After a rename: the node of the inode now at `path` in `dir` (if the table has one) moves there. */
  protected follow(dir: Node, path: Uint8Array): void {
    const buf = new Uint8Array(S.STATX_SIZE_BYTES);
    if (S.statx(dir.fd, path, S.AT_SYMLINK_NOFOLLOW, S.STATX_INO, buf) < 0) return;
    const st = S.decodeStatx(buf);
    const node = this.nodes.get(nodeKey(devOf(st), st.ino));
    if (node) this.nodes.setParent(node, dir, path.slice(0, path.length - 1));
  }

  protected usable(file: OpenFile, op: string): OpenFile {
    if (file.closed) fail(S.EBADF, op, 'file closed');
    return file;
  }

  protected writable(op: string): void {
    if (this.readOnly) fail(S.EROFS, op, 'the share is read-only');
    if (this.disposed) fail(S.EBADF, op, 'the share is closed');
  }

  protected reserve(n: number, op: string): void {
    if (this.fdsInUse + n > this.maxFds) fail(S.EMFILE, op, `the share holds ${this.fdsInUse} fds (limit ${this.maxFds})`);
  }

  /**
   * The inode number the guest sees: st_ino on the root's device; on another
   * device under the share (a mount point inside it), st_ino with the top
   * byte xored with that device's index, so inodes of different filesystems
   * rarely collide (they can only when inode numbers use the top byte).
   */
  protected inodeId(dev: string, ino: bigint): bigint {
    let idx = this.devices.get(dev);
    if (idx === undefined) {
      idx = (this.devices.size - 1) % 255 + 1;
      this.devices.set(dev, idx);
    }
    return idx === 0 ? ino : (ino ^ (BigInt(idx) << 56n)) & MASK64;
  }

  protected toStat(dev: string, st: S.RawStat): Stat {
    return {
      id: this.inodeId(dev, st.ino),
      kind: kindOf(st.mode),
      mode: st.mode,
      nlink: st.nlink,
      uid: st.uid,
      gid: st.gid,
      rdevMajor: st.rdevMajor,
      rdevMinor: st.rdevMinor,
      size: st.size,
      blksize: st.blksize,
      blocks: st.blocks,
      atime: { sec: st.atimeSec, nsec: st.atimeNsec },
      mtime: { sec: st.mtimeSec, nsec: st.mtimeNsec },
      ctime: { sec: st.ctimeSec, nsec: st.ctimeNsec },
      btime: (st.mask & S.STATX_BTIME) !== 0 ? { sec: st.btimeSec, nsec: st.btimeNsec } : null,
    };
  }
}

/** statx of an fd's own inode (AT_EMPTY_PATH, never following a symlink). */
export function rawStat(fd: number, op: string): S.RawStat {
  const buf = new Uint8Array(S.STATX_SIZE_BYTES);
  check(S.statx(fd, EMPTY_PATH, STAT_FLAGS, STAT_MASK, buf), op);
  return S.decodeStatx(buf);
}

export function devOf(st: S.RawStat): string {
  return `${st.devMajor}:${st.devMinor}`;
}

/** openat2 with the sandbox resolve flags, retried on EINTR. */
export function openBeneath(dirfd: number, path: Uint8Array, flags: number, mode: number, op: string): number {
  return retryEintr(() => S.openat2(dirfd, path, flags, mode, RESOLVE_SANDBOX), op);
}

export function retryEintr(call: () => number, op: string): number {
  for (;;) {
    const r = call();
    if (r >= 0) return r;
    const e = S.errno();
    if (e !== S.EINTR) fail(e, op);
  }
}

/** A libc result, or FsError with errno when it is negative. */
export function check(r: number, op: string): number {
  if (r < 0) fail(S.errno(), op);
  return r;
}

/** One struct timespec of utimensat's array: UTIME_OMIT when absent, UTIME_NOW for 'now'. */
export function encodeTime(buf: Uint8Array, at: number, t: Timespec | 'now' | undefined): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (t === undefined || t === 'now') {
    dv.setBigInt64(at, 0n, true);
    dv.setBigInt64(at + 8, BigInt(t === undefined ? S.UTIME_OMIT : S.UTIME_NOW), true);
    return;
  }
  if (!Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec >= NSEC_PER_SEC) fail(S.EINVAL, 'utimensat', `nanoseconds ${t.nsec}`);
  if (t.sec > INT64_MAX || t.sec < -INT64_MAX - 1n) fail(S.EINVAL, 'utimensat', `seconds ${t.sec}`);
  dv.setBigInt64(at, t.sec, true);
  dv.setBigInt64(at + 8, BigInt(t.nsec), true);
}

/** A quarter of RLIMIT_NOFILE's soft limit, in 256..65536. */
export function defaultMaxFds(): number {
  const buf = new Uint8Array(16);
  if (S.getrlimit(S.RLIMIT_NOFILE, buf) < 0) return 1024;
  const cur = new DataView(buf.buffer).getBigUint64(0, true);
  const quarter = cur > 4n * 65536n ? 65536 : Number(cur / 4n);
  return Math.max(256, Math.min(65536, quarter));
}

