/**
 * A host directory shared with a hostile guest: the protocol-neutral backend
 * of virtio-9p (and, later, virtio-fs). Read README.md in this folder for the
 * sandbox rules; in short:
 *
 * - Every name the guest gives is ONE validated component (names.ts) and is
 *   resolved with openat2(parent's fd, name, RESOLVE_BENEATH |
 *   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS) relative to the O_PATH fd
 *   held for the parent node. Every other *at call takes a node's fd plus one
 *   such component, so the kernel never walks more than one step, never
 *   follows a symlink, and never leaves the share.
 * - ".." is the node table's `parent` (the root's is the root), not a name.
 * - Symlinks are data: readlink only. Opening, chmod, truncate and xattrs
 *   refuse them; chown/utimes/stat act on the link itself.
 * - Re-opening a node for I/O (a node fd is O_PATH) goes through the node's
 *   OWN fd: a directory with openat2(fd, "."), a regular file through the
 *   /proc/self/fd/N magic link of our fd (the one place a magic link is
 *   followed: the path is a number we generate, the inode is the one the fd
 *   pins, and its type was checked to be a regular file).
 * - A read-only share refuses every mutating call with EROFS before any syscall.
 *
 * Single-threaded: one instance per share, used on the I/O worker only.
 * Failures throw {@link FsError} with the errno for the guest.
 */
import { fail, FsError } from './errors.js';
import { componentBytes, cstr, DOT_PATH, EMPTY_PATH, decimalPath, symlinkTarget, type NameInput } from './names.js';
import { Node, NodeTable, nodeKey, type NodeKind } from './nodes.js';
import * as S from './sys.js';
import { FileIo, OpenFile } from './file-io.js';
import { checkWritableXattr, xattrGet, xattrList, xattrName, xattrRemove, xattrSet } from './xattr.js';
import type { DirEntry, LockInfo, LockRange, OpenMode, Owner, SetAttr, Stat, Statfs, Timespec } from './types.js';
import type { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import type { Segment } from '../../queue/types.js';

export { OpenFile };

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
const RESOLVE_SANDBOX = S.RESOLVE_BENEATH | S.RESOLVE_NO_MAGICLINKS | S.RESOLVE_NO_SYMLINKS;
const STAT_FLAGS = S.AT_EMPTY_PATH | S.AT_SYMLINK_NOFOLLOW;
const STAT_MASK = S.STATX_BASIC_STATS | S.STATX_BTIME;
const PERM_MASK = 0o7777;
const MASK64 = (1n << 64n) - 1n;
/** fchownat's "leave unchanged" id. */
const ID_UNCHANGED = 0xffff_ffff;
const NSEC_PER_SEC = 1_000_000_000;
const INT64_MAX = (1n << 63n) - 1n;

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

export class HostDir {
  readonly root: Node;
  readonly readOnly: boolean;
  readonly maxFds: number;
  private readonly nodes: NodeTable;
  private readonly io: FileIo;
  /** O_PATH fd of /proc/self/fd, for re-opening our own fds (see the file comment). */
  private readonly procFd: number;
  /** Host devices seen under the share, in order: index 0 is the root's. */
  private readonly devices = new Map<string, number>();
  private readonly files = new Set<OpenFile>();
  private readonly isRoot = S.geteuid() === 0;
  private disposed = false;

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

  // ---- references ----

  /**
   * The node for `name` in directory `dir` (one more reference for the caller).
   * ENOTDIR when `dir` is not a directory; EINVAL for an invalid name (".." included:
   * use parent()); ENOENT etc. from the host. A symlink is returned as itself.
   */
  lookup(dir: Node, name: NameInput): Node {
    const bytes = componentBytes(name, 'lookup');
    if (dir.kind !== 'dir') fail(S.ENOTDIR, 'lookup');
    const fd = openBeneath(dir.fd, cstr(bytes), S.O_PATH | S.O_NOFOLLOW | S.O_CLOEXEC, 0, 'lookup');
    return this.adopt(fd, dir, bytes);
  }

  /** ".." of `node` from the node table (the root's parent is the root). One more reference. ENOTDIR for a non-directory. */
  parent(node: Node): Node {
    if (node.kind !== 'dir') fail(S.ENOTDIR, 'parent');
    const p = node === this.root ? this.root : (node.parent ?? this.root);
    p.refs++;
    return p;
  }

  /** One more reference to `node` (a protocol-level clone). */
  ref(node: Node): Node {
    node.refs++;
    return node;
  }

  /** Gives back one reference. */
  release(node: Node): void {
    this.nodes.release(node);
  }

  // ---- attributes ----

  stat(node: Node): Stat {
    return this.toStat(node.dev, rawStat(node.fd, 'stat'));
  }

  statfs(node: Node): Statfs {
    const buf = new Uint8Array(S.STATFS_SIZE);
    check(S.fstatfs(node.fd, buf), 'statfs');
    return S.decodeStatfs(buf);
  }

  /** A symlink's target bytes. EINVAL when `node` is not a symlink. */
  readlink(node: Node): Uint8Array {
    if (node.kind !== 'symlink') fail(S.EINVAL, 'readlink', 'not a symlink');
    const buf = new Uint8Array(S.PATH_MAX);
    const n = check(S.readlinkat(node.fd, EMPTY_PATH, buf, buf.length), 'readlink');
    return buf.slice(0, n);
  }

  /**
   * Applies `attrs` in the order mode, owner, size, times. `file`, when the caller
   * has the node open for writing, is used for the truncate. Symlinks: chmod and
   * truncate are refused (EOPNOTSUPP / EINVAL); owner and times apply to the link.
   */
  setattr(node: Node, attrs: SetAttr, file?: OpenFile): void {
    this.writable('setattr');
    if (attrs.mode !== undefined) this.chmod(node, sanitizePerm(attrs.mode, node.kind === 'dir'));
    if (attrs.uid !== undefined || attrs.gid !== undefined) {
      check(S.fchownat(node.fd, EMPTY_PATH, attrs.uid ?? ID_UNCHANGED, attrs.gid ?? ID_UNCHANGED, STAT_FLAGS), 'chown');
    }
    if (attrs.size !== undefined) this.truncate(node, attrs.size, file);
    if (attrs.atime !== undefined || attrs.mtime !== undefined) {
      const times = new Uint8Array(32);
      encodeTime(times, 0, attrs.atime);
      encodeTime(times, 16, attrs.mtime);
      check(S.utimensat(node.fd, EMPTY_PATH, times, STAT_FLAGS), 'utimensat');
    }
  }

  // ---- open, create ----

  /**
   * Opens `node` for I/O. Directories: read access only (EISDIR otherwise).
   * Symlinks: ELOOP. Devices: EPERM (the guest never opens host devices);
   * FIFOs and sockets: ENXIO. EROFS for write access or truncate on a read-only share.
   */
  open(node: Node, mode: OpenMode): OpenFile {
    const flags = this.openFlags(node.kind, mode, 'open');
    this.reserve(1, 'open');
    const fd = node.kind === 'dir'
      ? openBeneath(node.fd, DOT_PATH, S.O_RDONLY | S.O_DIRECTORY | S.O_CLOEXEC, 0, 'open')
      : this.reopen(node, flags, 'open');
    return this.track(fd, node, mode);
  }

  /**
   * Creates regular file `name` in `dir` with permission bits `perm` and opens it.
   * Without `exclusive`, an existing regular file is opened instead (other kinds:
   * EISDIR / ELOOP / EPERM; an existing FIFO or device is never opened). Returns the
   * node (one reference) and the open file (which holds its own).
   */
  create(dir: Node, name: NameInput, mode: OpenMode, perm: number, owner: Owner | undefined, exclusive: boolean): { node: Node; file: OpenFile } {
    this.writable('create');
    const bytes = componentBytes(name, 'create');
    if (dir.kind !== 'dir') fail(S.ENOTDIR, 'create');
    const flags = this.openFlags('file', mode, 'create');
    this.reserve(2, 'create');
    const want = sanitizePerm(perm, false);
    // O_EXCL first, always: opening whatever already sits at `name` could open a FIFO (and block) or a device.
    const fd = S.openat2(dir.fd, cstr(bytes), flags | S.O_CREAT | S.O_EXCL | S.O_NOFOLLOW, want, RESOLVE_SANDBOX);
    if (fd < 0) {
      const e = S.errno();
      if (e !== S.EEXIST || exclusive) fail(e, 'create');
      const node = this.lookup(dir, bytes);
      try {
        if (node.kind !== 'file') fail(node.kind === 'dir' ? S.EISDIR : node.kind === 'symlink' ? S.ELOOP : S.EPERM, 'create', `existing ${node.kind}`);
        return { node, file: this.open(node, mode) };
      } catch (err) {
        this.release(node);
        throw err;
      }
    }
    let node: Node;
    try {
      // The node's own fd must be O_PATH (an O_WRONLY one would make the file ETXTBSY on the host):
      // re-open the very inode we just created through our fd, not through its name.
      node = this.adopt(this.reopenPath(fd, 'create'), dir, bytes);
    } catch (err) {
      S.close(fd);
      throw err;
    }
    const file = this.track(fd, node, mode);
    try {
      this.applyOwnerAndMode(node, fd, want, owner);
    } catch (err) {
      this.close(file);
      this.release(node);
      throw err;
    }
    return { node, file };
  }

  /** Creates directory `name` in `dir`; returns its node (one reference). */
  mkdir(dir: Node, name: NameInput, perm: number, owner?: Owner): Node {
    this.writable('mkdir');
    const path = this.childPath(dir, name, 'mkdir');
    const want = sanitizePerm(perm, true);
    check(S.mkdirat(dir.fd, path, want), 'mkdir');
    return this.created(dir, path, want, owner);
  }

  /** Creates symlink `name` -> `target` in `dir` (the target is stored, never resolved); returns its node. */
  symlink(dir: Node, name: NameInput, target: NameInput, owner?: Owner): Node {
    this.writable('symlink');
    const path = this.childPath(dir, name, 'symlink');
    check(S.symlinkat(symlinkTarget(target, 'symlink'), dir.fd, path), 'symlink');
    return this.created(dir, path, null, owner);
  }

  /**
   * Creates a FIFO, socket or empty regular file (`mode` carries S_IFMT and the
   * permission bits). Character and block devices are refused with EPERM: a
   * guest-made device node would be a real device on the host.
   */
  mknod(dir: Node, name: NameInput, mode: number, owner?: Owner): Node {
    this.writable('mknod');
    const path = this.childPath(dir, name, 'mknod');
    const type = (mode & S.S_IFMT) === 0 ? S.S_IFREG : mode & S.S_IFMT;
    if (type === S.S_IFCHR || type === S.S_IFBLK) fail(S.EPERM, 'mknod', 'device nodes are not allowed in a share');
    if (type !== S.S_IFREG && type !== S.S_IFIFO && type !== S.S_IFSOCK) fail(S.EINVAL, 'mknod', `file type 0o${type.toString(8)}`);
    const want = sanitizePerm(mode, false);
    check(S.mknodat(dir.fd, path, type | want, 0n), 'mknod');
    return this.created(dir, path, want, owner);
  }

  /** Hard link `name` in `dir` to `node` (not a directory: EPERM). */
  link(node: Node, dir: Node, name: NameInput): void {
    this.writable('link');
    const path = this.childPath(dir, name, 'link');
    if (node.kind === 'dir') fail(S.EPERM, 'link', 'hard links to directories');
    // linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; without it, the
    // documented alternative is our fd's /proc/self/fd link, followed once.
    const r = this.isRoot
      ? S.linkat(node.fd, EMPTY_PATH, dir.fd, path, S.AT_EMPTY_PATH)
      : S.linkat(this.procFd, decimalPath(node.fd), dir.fd, path, S.AT_SYMLINK_FOLLOW);
    check(r, 'link');
  }

  /** Removes entry `name` of `dir`: a directory when `isDir` (AT_REMOVEDIR), anything else otherwise. */
  unlink(dir: Node, name: NameInput, isDir: boolean): void {
    this.writable('unlink');
    const path = this.childPath(dir, name, 'unlink');
    check(S.unlinkat(dir.fd, path, isDir ? S.AT_REMOVEDIR : 0), 'unlink');
  }

  /** Removes the entry `node` was reached by (9P Tremove). EBUSY for the root; ESTALE when that name is gone or names another inode now. */
  remove(node: Node): void {
    this.writable('remove');
    const { parent, name } = this.ownEntry(node, 'remove');
    check(S.unlinkat(parent.fd, cstr(name), node.kind === 'dir' ? S.AT_REMOVEDIR : 0), 'remove');
  }

  /**
   * renameat2(oldDir, oldName, newDir, newName, flags), flags 0, RENAME_NOREPLACE or
   * RENAME_EXCHANGE (RENAME_WHITEOUT would create a device node: EINVAL).
   * Nodes of the moved inodes follow them in the table.
   */
  rename(oldDir: Node, oldName: NameInput, newDir: Node, newName: NameInput, flags = 0): void {
    this.writable('rename');
    const oldPath = this.childPath(oldDir, oldName, 'rename');
    const newPath = this.childPath(newDir, newName, 'rename');
    if ((flags & ~(S.RENAME_NOREPLACE | S.RENAME_EXCHANGE)) !== 0) fail(S.EINVAL, 'rename', `flags 0x${flags.toString(16)}`);
    check(S.renameat2(oldDir.fd, oldPath, newDir.fd, newPath, flags), 'rename');
    this.follow(newDir, newPath);
    if (flags & S.RENAME_EXCHANGE) this.follow(oldDir, oldPath);
  }

  /** Renames the entry `node` was reached by to `newName` in `newDir` (9P Trename). */
  renameNode(node: Node, newDir: Node, newName: NameInput): void {
    this.writable('rename');
    const { parent, name } = this.ownEntry(node, 'rename');
    this.rename(parent, name, newDir, newName);
  }

  // ---- I/O on open files ----

  /** Closes `file` (idempotent) and gives back its node reference. */
  close(file: OpenFile): void {
    if (file.closed) return;
    file.closed = true;
    this.files.delete(file);
    S.close(file.fd);
    this.release(file.node);
  }

  /** preadv straight into guest `segments`, from byte `offset`; returns the bytes read (short at end of file). */
  readv(file: OpenFile, offset: bigint, memory: GuestMemory, segments: readonly Segment[]): number {
    return this.io.readv(this.usable(file, 'read'), offset, memory, segments);
  }

  /** pwritev from guest `segments` at byte `offset`; returns the bytes written (short only when the host fails part way). */
  writev(file: OpenFile, offset: bigint, memory: GuestMemory, segments: readonly Segment[]): number {
    this.writable('write');
    return this.io.writev(this.usable(file, 'write'), offset, memory, segments);
  }

  /** pread into `buf`; returns the bytes read. */
  read(file: OpenFile, offset: bigint, buf: Uint8Array): number {
    return this.io.read(this.usable(file, 'read'), offset, buf);
  }

  /** pwrite of `data`; returns the bytes written. */
  write(file: OpenFile, offset: bigint, data: Uint8Array): number {
    this.writable('write');
    return this.io.write(this.usable(file, 'write'), offset, data);
  }

  /**
   * Lists directory `file` from `cookie` (0, or an entry's `offset`), calling
   * `visit` per entry until it returns false or the directory ends. "." and ".."
   * carry the ids of this directory and of its parent in the node table.
   */
  readdir(file: OpenFile, cookie: bigint, visit: (entry: DirEntry) => boolean): void {
    const node = this.usable(file, 'readdir').node;
    if (node.kind !== 'dir') fail(S.ENOTDIR, 'readdir');
    const parentId = node === this.root ? this.root.id : (node.parent ?? this.root).id;
    this.io.readdir(file, cookie, (ino) => this.inodeId(node.dev, ino), node.id, parentId, visit);
  }

  fsync(file: OpenFile, dataOnly: boolean): void {
    this.io.fsync(this.usable(file, 'fsync'), dataOnly);
  }

  /** Takes or releases an open-file-description lock without waiting; false when another holder conflicts. */
  setlk(file: OpenFile, lock: LockRange): boolean {
    return this.io.setlk(this.usable(file, 'lock'), lock);
  }

  /** The first lock that would conflict with `lock`, or one of type F_UNLCK. */
  getlk(file: OpenFile, lock: LockRange): LockInfo {
    return this.io.getlk(this.usable(file, 'getlock'), lock);
  }

  /** lseek (SEEK_SET/CUR/END/DATA/HOLE): the new offset. */
  lseek(file: OpenFile, offset: bigint, whence: number): bigint {
    return this.io.lseek(this.usable(file, 'lseek'), offset, whence);
  }

  /** fallocate with mode 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE or ZERO_RANGE(|KEEP_SIZE). */
  fallocate(file: OpenFile, mode: number, offset: bigint, length: bigint): void {
    this.writable('fallocate');
    this.io.fallocate(this.usable(file, 'fallocate'), mode, offset, length);
  }

  // ---- extended attributes ----

  /** The value of xattr `name` (at most 64 KiB). Symlinks and special files have none (ENODATA). */
  getxattr(node: Node, name: NameInput): Uint8Array {
    return this.withXattrFd(node, 'getxattr', () => fail(S.ENODATA, 'getxattr', `no xattrs on a ${node.kind}`), (fd) => xattrGet(fd, name));
  }

  /** The NUL-separated xattr names (at most 64 KiB). Empty for symlinks and special files. */
  listxattr(node: Node): Uint8Array {
    return this.withXattrFd(node, 'listxattr', () => new Uint8Array(0), (fd) => xattrList(fd));
  }

  /** Sets xattr `name` (flags XATTR_CREATE / XATTR_REPLACE). Namespaces: see README.md "Policies". */
  setxattr(node: Node, name: NameInput, value: Uint8Array, flags: number): void {
    this.writable('setxattr');
    this.withXattrFd(node, 'setxattr', () => fail(S.EPERM, 'setxattr', `on a ${node.kind}`), (fd) => xattrSet(fd, name, value, flags));
  }

  /**
   * The checks setxattr/removexattr will make, without touching the host: for a
   * protocol that collects the value first (9P's Txattrcreate), so the guest hears
   * EROFS / EPERM / EOPNOTSUPP / EINVAL up front.
   */
  checkSetxattr(node: Node, name: NameInput): void {
    this.writable('setxattr');
    if (node.kind !== 'file' && node.kind !== 'dir') fail(S.EPERM, 'setxattr', `on a ${node.kind}`);
    checkWritableXattr(xattrName(name, 'setxattr'), 'setxattr');
  }

  removexattr(node: Node, name: NameInput): void {
    this.writable('removexattr');
    this.withXattrFd(node, 'removexattr', () => fail(S.EPERM, 'removexattr', `on a ${node.kind}`), (fd) => xattrRemove(fd, name));
  }

  /** Closes every open file and node fd (the root fd stays its opener's). The object is unusable afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const f of this.files) {
      f.closed = true;
      S.close(f.fd);
    }
    this.files.clear();
    this.nodes.clear();
    S.close(this.procFd);
  }

  // ---- internals ----

  /** Takes a fresh O_PATH fd on a child of `parent`: the table's node for its inode (gets the reference; the fd is closed), or a new node. */
  private adopt(fd: number, parent: Node, name: Uint8Array): Node {
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

  /** After creating `path` in `dir`: its node, with owner and permission bits applied. On failure the node is released. */
  private created(dir: Node, path: Uint8Array, perm: number | null, owner: Owner | undefined): Node {
    const node = this.lookup(dir, path.subarray(0, path.length - 1));
    try {
      this.applyOwnerAndMode(node, null, perm, owner);
    } catch (e) {
      this.release(node);
      throw e;
    }
    return node;
  }

  /**
   * Sets the owner the protocol asked for (best effort: EPERM is ignored when we
   * are not root) and the exact permission bits (our umask may have cleared some).
   * `fd`: an open fd of the inode, if the caller has one (for fchmod).
   */
  private applyOwnerAndMode(node: Node, fd: number | null, perm: number | null, owner: Owner | undefined): void {
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
  private chmod(node: Node, perm: number): void {
    if (node.kind === 'symlink') fail(S.EOPNOTSUPP, 'chmod', 'symlink permissions cannot be changed');
    check(S.fchmodat(this.procFd, decimalPath(node.fd), perm, 0), 'chmod');
  }

  private truncate(node: Node, size: bigint, file: OpenFile | undefined): void {
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
   * Runs `fn` on a readable fd of a regular file or directory (for the f*xattr calls,
   * which refuse O_PATH fds); `other` answers for symlinks and special files, whose
   * xattrs the backend never touches (a path-based call could follow a symlink).
   */
  private withXattrFd<T>(node: Node, op: string, other: () => T, fn: (fd: number) => T): T {
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
  private reopen(node: Node, flags: number, op: string): number {
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
  private reopenPath(fd: number, op: string): number {
    return retryEintr(() => S.openat(this.procFd, decimalPath(fd), S.O_PATH | S.O_CLOEXEC, 0), op);
  }

  private track(fd: number, node: Node, mode: OpenMode): OpenFile {
    const file = new OpenFile(fd, node, mode);
    node.refs++;
    this.files.add(file);
    return file;
  }

  /** The host open flags for `mode` on a `kind`, after the policy checks. */
  private openFlags(kind: NodeKind, mode: OpenMode, op: string): number {
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
  private childPath(dir: Node, name: NameInput, op: string): Uint8Array {
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
  private ownEntry(node: Node, op: string): { parent: Node; name: Uint8Array } {
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
  private follow(dir: Node, path: Uint8Array): void {
    const buf = new Uint8Array(S.STATX_SIZE_BYTES);
    if (S.statx(dir.fd, path, S.AT_SYMLINK_NOFOLLOW, S.STATX_INO, buf) < 0) return;
    const st = S.decodeStatx(buf);
    const node = this.nodes.get(nodeKey(devOf(st), st.ino));
    if (node) this.nodes.setParent(node, dir, path.slice(0, path.length - 1));
  }

  private usable(file: OpenFile, op: string): OpenFile {
    if (file.closed) fail(S.EBADF, op, 'file closed');
    return file;
  }

  private writable(op: string): void {
    if (this.readOnly) fail(S.EROFS, op, 'the share is read-only');
    if (this.disposed) fail(S.EBADF, op, 'the share is closed');
  }

  private reserve(n: number, op: string): void {
    if (this.fdsInUse + n > this.maxFds) fail(S.EMFILE, op, `the share holds ${this.fdsInUse} fds (limit ${this.maxFds})`);
  }

  /**
   * The inode number the guest sees: st_ino on the root's device; on another
   * device under the share (a mount point inside it), st_ino with the top
   * byte xored with that device's index, so inodes of different filesystems
   * rarely collide (they can only when inode numbers use the top byte).
   */
  private inodeId(dev: string, ino: bigint): bigint {
    let idx = this.devices.get(dev);
    if (idx === undefined) {
      idx = (this.devices.size - 1) % 255 + 1;
      this.devices.set(dev, idx);
    }
    return idx === 0 ? ino : (ino ^ (BigInt(idx) << 56n)) & MASK64;
  }

  private toStat(dev: string, st: S.RawStat): Stat {
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
function rawStat(fd: number, op: string): S.RawStat {
  const buf = new Uint8Array(S.STATX_SIZE_BYTES);
  check(S.statx(fd, EMPTY_PATH, STAT_FLAGS, STAT_MASK, buf), op);
  return S.decodeStatx(buf);
}

function devOf(st: S.RawStat): string {
  return `${st.devMajor}:${st.devMinor}`;
}

/** openat2 with the sandbox resolve flags, retried on EINTR. */
function openBeneath(dirfd: number, path: Uint8Array, flags: number, mode: number, op: string): number {
  return retryEintr(() => S.openat2(dirfd, path, flags, mode, RESOLVE_SANDBOX), op);
}

function retryEintr(call: () => number, op: string): number {
  for (;;) {
    const r = call();
    if (r >= 0) return r;
    const e = S.errno();
    if (e !== S.EINTR) fail(e, op);
  }
}

/** A libc result, or FsError with errno when it is negative. */
function check(r: number, op: string): number {
  if (r < 0) fail(S.errno(), op);
  return r;
}

/** One struct timespec of utimensat's array: UTIME_OMIT when absent, UTIME_NOW for 'now'. */
function encodeTime(buf: Uint8Array, at: number, t: Timespec | 'now' | undefined): void {
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
function defaultMaxFds(): number {
  const buf = new Uint8Array(16);
  if (S.getrlimit(S.RLIMIT_NOFILE, buf) < 0) return 1024;
  const cur = new DataView(buf.buffer).getBigUint64(0, true);
  const quarter = cur > 4n * 65536n ? 65536 : Number(cur / 4n);
  return Math.max(256, Math.min(65536, quarter));
}

export { FsError };
