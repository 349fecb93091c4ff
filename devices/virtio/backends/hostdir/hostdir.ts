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
import type { Node } from './nodes.js';
import * as S from './sys.js';
import { OpenFile } from './file-io.js';
import { checkWritableXattr, xattrGet, xattrList, xattrName, xattrRemove, xattrSet } from './xattr.js';
import type { DirEntry, LockInfo, LockRange, OpenMode, Owner, SetAttr, Stat, Statfs } from './types.js';
import {
  check, encodeTime, HostDirCore, ID_UNCHANGED, openBeneath, rawStat, RESOLVE_SANDBOX, sanitizePerm, STAT_FLAGS,
} from './core.js';
import type { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import type { Segment } from '../../queue/types.js';

export { OpenFile, FsError };
export { kindOf, sanitizePerm, type HostDirOptions } from './core.js';

/**
 * The share: every operation the protocols need. Construct it with
 * `new HostDir(rootFd, { readOnly, maxFds? })` on the I/O worker (see HostDirCore's
 * constructor); `dispose()` closes what it opened.
 */
export class HostDir extends HostDirCore {
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
    if (node.kind !== 'file' && node.kind !== 'dir') fail(S.ENODATA, 'getxattr', `no xattrs on a ${node.kind}`);
    return xattrGet(this.fdLinkPath(node), name);
  }

  /** The NUL-separated xattr names (at most 64 KiB). Empty for symlinks and special files. */
  listxattr(node: Node): Uint8Array {
    if (node.kind !== 'file' && node.kind !== 'dir') return new Uint8Array(0);
    return xattrList(this.fdLinkPath(node));
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
}
